package luks

import (
	"crypto/pbkdf2"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"hash"
	"io"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Bounds on the key derivations a header may ask for. A header is as
// hostile as an image: it chooses its KDF's cost, and an absurd one
// would hold create for hours or take all memory. These admit what
// cryptsetup makes with its defaults on any machine (it benchmarks a
// KDF to take 2 s, never above 1 GiB of memory, 4 threads) with room to
// spare, and refuse the rest with the bound named.
const (
	// maxArgonMemory (KiB) is cryptsetup's default ceiling, 1 GiB; its
	// absolute maximum, 4 GiB with --pbkdf-memory, would let a header
	// make Platter allocate 4 GiB per keyslot.
	maxArgonMemory = 1 << 20
	// maxArgonCPUs bounds the lanes (goroutines) of one derivation.
	maxArgonCPUs = 16
	// maxArgonWork is memory (KiB) times passes: 32 passes over 1 GiB,
	// about 30 s on one core; cryptsetup's 2-second benchmark gives a
	// few GiB-passes.
	maxArgonWork = 32 << 20
	// maxPBKDF2Work is iterations times output blocks of the hash:
	// about 15 s of SHA-256 on one core, ten times what cryptsetup's
	// 2-second benchmark picks on a fast machine.
	maxPBKDF2Work = 1 << 26
	// maxTotalWork bounds all derivations of one volume, in 1/1024ths
	// of a largest allowed one: four of those, however many keyslots
	// and keys there are.
	maxTotalWork = 4 << 10
)

// budget is the derivation work left for one volume.
type budget struct{ left int64 }

// cost returns a derivation's share of its kind's bound, in 1/1024ths,
// or why it is refused.
func (k *kdf) cost(outLen int) (int64, string) {
	switch k.typ {
	case "pbkdf2":
		h := hashFunc(k.hash)
		if h == nil {
			return 0, fmt.Sprintf("PBKDF2 hash %q not supported", k.hash)
		}
		if k.iterations < 1 {
			return 0, fmt.Sprintf("PBKDF2 with %d iterations", k.iterations)
		}
		blocks := int64((outLen + h().Size() - 1) / h().Size())
		if k.iterations > maxPBKDF2Work/blocks {
			return 0, fmt.Sprintf("PBKDF2 with %d iterations is more work than Platter accepts from a header (%d iterations of %d-byte blocks): refused, a hostile header could hold create for hours", k.iterations, maxPBKDF2Work/blocks, h().Size())
		}
		return max(1, k.iterations*blocks*1024/maxPBKDF2Work), ""
	case "argon2i", "argon2id":
		switch {
		case k.memory > maxArgonMemory:
			return 0, fmt.Sprintf("%s memory %d KiB exceeds the 1 GiB Platter accepts from a header (cryptsetup never picks more by default; a hostile header could ask 4 GiB per keyslot)", k.typ, k.memory)
		case k.cpus < 1 || k.cpus > maxArgonCPUs:
			return 0, fmt.Sprintf("%s with %d threads (Platter accepts 1 to %d)", k.typ, k.cpus, maxArgonCPUs)
		case k.memory < 8*k.cpus:
			return 0, fmt.Sprintf("%s memory %d KiB is below 8 KiB per thread", k.typ, k.memory)
		case k.time < 1 || k.time > maxArgonWork/k.memory:
			return 0, fmt.Sprintf("%s with %d passes over %d KiB is more work than Platter accepts from a header (32 passes over 1 GiB)", k.typ, k.time, k.memory)
		}
		return max(1, k.time*k.memory*1024/maxArgonWork), ""
	}
	return 0, fmt.Sprintf("KDF %q not supported", k.typ)
}

// derive runs the KDF over pass, giving n bytes.
func (k *kdf) derive(pass []byte, n int) ([]byte, error) {
	switch k.typ {
	case "pbkdf2":
		return pbkdf2.Key(hashFunc(k.hash), string(pass), k.salt, int(k.iterations), n)
	case "argon2i":
		return argon2.Key(pass, k.salt, uint32(k.time), uint32(k.memory), uint8(k.cpus), uint32(n)), nil
	case "argon2id":
		return argon2.IDKey(pass, k.salt, uint32(k.time), uint32(k.memory), uint8(k.cpus), uint32(n)), nil
	}
	return nil, fmt.Errorf("KDF %q not supported", k.typ)
}

// unlock tries every key on every keyslot and returns the volume key,
// or nil and why none opened it.
func (v *volume) unlock(r io.ReaderAt, keys [][]byte) ([]byte, string) {
	dcost, why := (&kdf{typ: "pbkdf2", hash: v.digest.hash, iterations: v.digest.iterations}).cost(len(v.digest.value))
	if why != "" {
		return nil, "its key digest: " + why
	}
	b := &budget{left: maxTotalWork}
	var reasons []string
	tried := 0
	for i := range v.slots {
		ks := &v.slots[i]
		if ks.skip != "" {
			reasons = append(reasons, fmt.Sprintf("keyslot %s not tried: %s", ks.id, ks.skip))
			continue
		}
		mk, why := v.trySlot(r, ks, keys, b, dcost)
		if mk != nil {
			return mk, ""
		}
		if why != "" {
			reasons = append(reasons, fmt.Sprintf("keyslot %s: %s", ks.id, why))
		} else {
			tried++
		}
	}
	if tried == 0 && len(reasons) == 0 {
		reasons = append(reasons, "it has no active keyslot")
	}
	return nil, strings.Join(reasons, "; ")
}

// trySlot tries each key on one keyslot. It returns the volume key, or
// nil and why the keyslot could not be tried ("" when it was and no key
// fit).
func (v *volume) trySlot(r io.ReaderAt, ks *keyslot, keys [][]byte, b *budget, dcost int64) ([]byte, string) {
	cost, why := ks.kdf.cost(ks.areaKey)
	if why != "" {
		return nil, why
	}
	h := hashFunc(ks.afHash)
	if h == nil {
		return nil, fmt.Sprintf("anti-forensic hash %q not supported", ks.afHash)
	}
	if _, err := newSectorCipher(ks.cipher, make([]byte, ks.areaKey)); err != nil {
		return nil, err.Error()
	}
	// The key material: the volume key split into 4000 stripes,
	// encrypted as a little disk of 512-byte sectors.
	n := int64(ks.keyBytes) * afStripes
	enc := make([]byte, roundUp(n, sectorSize512))
	if got, err := r.ReadAt(enc, ks.areaOff); got != len(enc) {
		return nil, fmt.Sprintf("read its key material at byte %d: %v", ks.areaOff, err)
	}
	material := make([]byte, len(enc))
	defer clear(material)
	for _, key := range keys {
		if b.left < cost+dcost {
			return nil, "not tried: the key derivations of this volume have taken all the work Platter allows a header (four of the largest)"
		}
		b.left -= cost
		ak, err := ks.kdf.derive(key, ks.areaKey)
		if err != nil {
			return nil, err.Error()
		}
		c, err := newSectorCipher(ks.cipher, ak)
		clear(ak)
		if err != nil {
			return nil, err.Error()
		}
		copy(material, enc)
		for s := 0; s < len(material); s += sectorSize512 {
			c.decrypt(material[s:s+sectorSize512], uint64(s/sectorSize512))
		}
		mk := afMerge(material[:n], ks.keyBytes, h)
		b.left -= dcost
		ok, err := v.digest.check(mk)
		if err != nil {
			clear(mk)
			return nil, err.Error()
		}
		if ok {
			return mk, ""
		}
		clear(mk)
	}
	return nil, ""
}

// check reports whether mk is the volume key the digest vouches for.
func (d *digest) check(mk []byte) (bool, error) {
	got, err := pbkdf2.Key(hashFunc(d.hash), string(mk), d.salt, int(d.iterations), len(d.value))
	if err != nil {
		return false, fmt.Errorf("key digest: %w", err)
	}
	return subtle.ConstantTimeCompare(got, d.value) == 1, nil
}

// afMerge undoes the anti-forensic splitter (LUKS1 spec, AFmerge): the
// stripes XORed together, each sum but the last diffused by the hash.
func afMerge(src []byte, keyBytes int, h func() hash.Hash) []byte {
	d := make([]byte, keyBytes)
	stripes := len(src) / keyBytes
	for i := range stripes - 1 {
		subtle.XORBytes(d, d, src[i*keyBytes:(i+1)*keyBytes])
		diffuse(d, h)
	}
	subtle.XORBytes(d, d, src[(stripes-1)*keyBytes:stripes*keyBytes])
	return d
}

// diffuse replaces each hash-sized block j of d by the hash of j (4
// bytes, big-endian) and the block, cut to the block's length.
func diffuse(d []byte, newHash func() hash.Hash) {
	h := newHash()
	ds := h.Size()
	var iv [4]byte
	sum := make([]byte, 0, ds)
	for j := 0; j*ds < len(d); j++ {
		blk := d[j*ds : min((j+1)*ds, len(d))]
		h.Reset()
		binary.BigEndian.PutUint32(iv[:], uint32(j))
		h.Write(iv[:])
		h.Write(blk)
		sum = h.Sum(sum[:0])
		copy(blk, sum)
	}
	clear(sum[:ds])
}
