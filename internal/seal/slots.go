package seal

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/zeebo/blake3"
)

// The key slot area holds two copies (A, then B) of the slots, each
// CopySize bytes: `passwd` writes the older copy, syncs, then the other,
// so a crash at any moment leaves at least one whole copy.
const (
	CopySize = 16 << 10
	AreaSize = 2 * CopySize

	copyHeadSize = 64
	copySumSize  = 32
	// MaxSlotBytes is the room for slots in one copy.
	MaxSlotBytes = CopySize - copyHeadSize - copySumSize
)

var copyMagic = [4]byte{'P', 'L', 'K', 'S'}

// Slot types, in the slot's first byte and in the associated data of what
// it seals.
const (
	TypePassphrase = 1 // Argon2id of a passphrase wraps the data key
	TypeRecipients = 2 // an age file to X25519 recipients holds the data key
	TypeList       = 3 // the recipients' public keys, sealed with the data key
)

// Argon2id parameters a reader accepts: a hostile slot must not make it
// spend more than about a GiB or minutes.
const (
	maxTime    = 16
	maxMemory  = 1 << 20 // KiB: 1 GiB
	maxThreads = 64
)

// Params are the Argon2id parameters of a passphrase slot.
type Params struct {
	Time      uint32 // passes
	MemoryKiB uint32
	Threads   uint8
}

// DefaultParams take about half a second and 256 MiB on a current
// machine (docs/security.md).
var DefaultParams = Params{Time: 2, MemoryKiB: 256 << 10, Threads: 4}

// Check reports parameters outside what a reader accepts.
func (p Params) Check() error {
	switch {
	case p.Time < 1 || p.Time > maxTime:
		return fmt.Errorf("argon2id time %d is not in 1..%d", p.Time, maxTime)
	case p.Threads < 1 || p.Threads > maxThreads:
		return fmt.Errorf("argon2id threads %d is not in 1..%d", p.Threads, maxThreads)
	case p.MemoryKiB < 8*uint32(p.Threads) || p.MemoryKiB > maxMemory:
		return fmt.Errorf("argon2id memory %d KiB is not in %d..%d", p.MemoryKiB, 8*uint32(p.Threads), maxMemory)
	}
	return nil
}

func (p Params) String() string {
	return fmt.Sprintf("argon2id t=%d m=%dMiB p=%d", p.Time, p.MemoryKiB>>10, p.Threads)
}

// PassSlot wraps the data key with a key derived from a passphrase.
type PassSlot struct {
	Params  Params
	Salt    [16]byte
	Nonce   [slotNonceSize]byte
	Wrapped [KeySize + slotOverhead]byte
}

const passSlotSize = 12 + 16 + slotNonceSize + KeySize + slotOverhead

// Slots are the key slots of one copy: a passphrase slot, an age file to
// the recipients, and the recipients' list, each optional (at least one
// of the first two is there).
type Slots struct {
	Generation uint64
	Pass       *PassSlot
	Recipients []byte // an age file holding id || data key
	List       []byte // nonce || sealed newline-separated recipients
}

// Encode returns one copy of s for the image id: CopySize bytes.
func (s *Slots) Encode(id [16]byte) ([]byte, error) {
	b := make([]byte, CopySize)
	le := binary.LittleEndian
	copy(b[0:4], copyMagic[:])
	le.PutUint16(b[4:], 1)
	le.PutUint64(b[8:], s.Generation)
	copy(b[16:32], id[:])
	pos := copyHeadSize
	n := 0
	put := func(typ byte, body []byte) error {
		if pos+4+len(body) > copyHeadSize+MaxSlotBytes {
			return fmt.Errorf("seal: the key slots need more than the %d bytes a copy holds (too many recipients)", MaxSlotBytes)
		}
		b[pos] = typ
		le.PutUint16(b[pos+2:], uint16(len(body)))
		copy(b[pos+4:], body)
		pos += 4 + len(body)
		n++
		return nil
	}
	if p := s.Pass; p != nil {
		body := make([]byte, passSlotSize)
		le.PutUint32(body[0:], p.Params.Time)
		le.PutUint32(body[4:], p.Params.MemoryKiB)
		body[8] = p.Params.Threads
		copy(body[12:28], p.Salt[:])
		copy(body[28:28+slotNonceSize], p.Nonce[:])
		copy(body[28+slotNonceSize:], p.Wrapped[:])
		if err := put(TypePassphrase, body); err != nil {
			return nil, err
		}
	}
	if s.Recipients != nil {
		if err := put(TypeRecipients, s.Recipients); err != nil {
			return nil, err
		}
	}
	if s.List != nil {
		if err := put(TypeList, s.List); err != nil {
			return nil, err
		}
	}
	if s.Pass == nil && s.Recipients == nil {
		return nil, errors.New("seal: no key slot (no passphrase and no recipient)")
	}
	le.PutUint16(b[6:], uint16(n))
	le.PutUint32(b[32:], uint32(pos-copyHeadSize))
	sum := blake3.Sum256(b[:CopySize-copySumSize])
	copy(b[CopySize-copySumSize:], sum[:])
	return b, nil
}

// Decode reads one copy (CopySize bytes) of the slots of image id. Every
// length is bounded by the copy; any damage is an error.
func Decode(b []byte, id [16]byte) (*Slots, error) {
	if len(b) != CopySize {
		return nil, fmt.Errorf("a key slot copy is %d bytes, not %d", len(b), CopySize)
	}
	le := binary.LittleEndian
	if [4]byte(b[0:4]) != copyMagic {
		return nil, errors.New("no key slot marker")
	}
	if sum := blake3.Sum256(b[:CopySize-copySumSize]); [32]byte(b[CopySize-copySumSize:]) != sum {
		return nil, errors.New("key slot checksum mismatch")
	}
	if v := le.Uint16(b[4:]); v != 1 {
		return nil, fmt.Errorf("key slot version %d is not supported", v)
	}
	if [16]byte(b[16:32]) != id {
		return nil, errors.New("the key slots belong to another image (id mismatch)")
	}
	count, length := int(le.Uint16(b[6:])), int64(le.Uint32(b[32:]))
	if length > MaxSlotBytes {
		return nil, fmt.Errorf("key slots claim %d bytes, a copy holds %d", length, MaxSlotBytes)
	}
	s := &Slots{Generation: le.Uint64(b[8:])}
	body := b[copyHeadSize : copyHeadSize+length]
	seen := map[byte]bool{}
	for i := 0; i < count; i++ {
		if len(body) < 4 {
			return nil, fmt.Errorf("key slot %d is cut off", i)
		}
		typ, n := body[0], int(le.Uint16(body[2:]))
		if n > len(body)-4 {
			return nil, fmt.Errorf("key slot %d claims %d bytes, %d are left", i, n, len(body)-4)
		}
		if seen[typ] {
			return nil, fmt.Errorf("key slot type %d twice", typ)
		}
		seen[typ] = true
		v := body[4 : 4+n]
		switch typ {
		case TypePassphrase:
			if n != passSlotSize {
				return nil, fmt.Errorf("passphrase slot is %d bytes, not %d", n, passSlotSize)
			}
			p := &PassSlot{Params: Params{Time: le.Uint32(v[0:]), MemoryKiB: le.Uint32(v[4:]), Threads: v[8]}}
			if err := p.Params.Check(); err != nil {
				return nil, fmt.Errorf("passphrase slot: %w", err)
			}
			copy(p.Salt[:], v[12:28])
			copy(p.Nonce[:], v[28:28+slotNonceSize])
			copy(p.Wrapped[:], v[28+slotNonceSize:])
			s.Pass = p
		case TypeRecipients:
			s.Recipients = append([]byte(nil), v...)
		case TypeList:
			if n < slotNonceSize+slotOverhead {
				return nil, fmt.Errorf("recipient list slot is %d bytes", n)
			}
			s.List = append([]byte(nil), v...)
		default:
			return nil, fmt.Errorf("key slot type %d is not known to this platter", typ)
		}
		body = body[4+n:]
	}
	if len(body) != 0 {
		return nil, fmt.Errorf("%d bytes after the last key slot", len(body))
	}
	if s.Pass == nil && s.Recipients == nil {
		return nil, errors.New("no passphrase and no recipient slot")
	}
	return s, nil
}

// Area is the slot area of an image as read: the slots of its newest
// whole copy, and which copies are damaged.
type Area struct {
	Slots   *Slots
	Current int       // the copy Slots came from: 0 (A) or 1 (B)
	Gen     [2]uint64 // each copy's generation (0 if damaged)
	// Damaged says why a copy does not read, per copy (nil if whole).
	Damaged [2]error
}

// ParseArea reads both copies of an area (AreaSize bytes) and takes the
// newest whole one. Only both damaged is an error.
func ParseArea(b []byte, id [16]byte) (*Area, error) {
	if len(b) != AreaSize {
		return nil, fmt.Errorf("the key slot area is %d bytes, not %d", len(b), AreaSize)
	}
	a := &Area{Current: -1}
	for i := range 2 {
		s, err := Decode(b[i*CopySize:(i+1)*CopySize], id)
		if err != nil {
			a.Damaged[i] = err
			continue
		}
		a.Gen[i] = s.Generation
		if a.Current < 0 || s.Generation > a.Slots.Generation {
			a.Slots, a.Current = s, i
		}
	}
	if a.Current < 0 {
		return nil, fmt.Errorf("both copies of the key slots are damaged: A: %v; B: %v", a.Damaged[0], a.Damaged[1])
	}
	return a, nil
}

// Older is the copy to write first when the slots change: a damaged one,
// else the older generation, else B.
func (a *Area) Older() int {
	switch {
	case a.Damaged[0] != nil:
		return 0
	case a.Damaged[1] != nil:
		return 1
	case a.Gen[0] < a.Gen[1]:
		return 0
	}
	return 1
}
