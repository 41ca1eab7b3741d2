package seal

import (
	"testing"

	"filippo.io/age"
	"github.com/zeebo/blake3"
)

// FuzzDecode feeds the slot decoder copies whose checksum is right, so
// the fuzzer reaches every length and type it reads: errors are fine, a
// panic or an allocation beyond the copy is not.
func FuzzDecode(f *testing.F) {
	id := [16]byte{3}
	ident, _ := age.GenerateX25519Identity()
	pk, _ := NewPassKey([]byte("pw"), cheap)
	key, _ := NewKey()
	s, err := (&Lock{Pass: pk, Recipients: []string{ident.Recipient().String()}}).Slots(id, key)
	if err != nil {
		f.Fatal(err)
	}
	b, _ := s.Encode(id)
	f.Add(b[:copyHeadSize+400])
	f.Fuzz(func(t *testing.T, in []byte) {
		c := make([]byte, CopySize)
		copy(c, in)
		sum := blake3.Sum256(c[:CopySize-copySumSize])
		copy(c[CopySize-copySumSize:], sum[:])
		if s, err := Decode(c, id); err == nil {
			// Whatever decodes, unlocking it is bounded too.
			(&Secrets{Identities: []age.Identity{ident}}).Unlock(id, s)
		}
	})
}
