package seal

import (
	"bytes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"filippo.io/age"
	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/chacha20poly1305"
)

// What a slot seals (the data key under a passphrase's key, the recipient
// list under the data key) is sealed with XChaCha20-Poly1305: a few dozen
// bytes, so speed is no reason to use AES, and ChaCha20 is constant-time
// on any CPU, while the age file beside it uses ChaCha20-Poly1305 anyway.
// Random 24-byte nonces never repeat under one key in practice.
const (
	slotNonceSize = chacha20poly1305.NonceSizeX
	slotOverhead  = chacha20poly1305.Overhead
)

// slotCipher is XChaCha20-Poly1305 with key.
func slotCipher(key *[KeySize]byte) cipher.AEAD {
	a, err := chacha20poly1305.NewX(key[:])
	if err != nil {
		panic(err) // the key size is right by construction
	}
	return a
}

// slotNonce returns a fresh random nonce for slotCipher.
func slotNonce() ([slotNonceSize]byte, error) {
	var n [slotNonceSize]byte
	if _, err := rand.Read(n[:]); err != nil {
		return n, fmt.Errorf("seal: random nonce: %w", err)
	}
	return n, nil
}

// listCipher is the cipher of k's recipient list.
func (k *Key) listCipher() cipher.AEAD {
	lk := k.derive(purposeList)
	return slotCipher(&lk)
}

// slotAD is the associated data of what a slot seals: the slot is bound
// to its image and its type.
func slotAD(id [16]byte, typ byte) []byte {
	ad := append([]byte("platter 2026 key slot "), id[:]...)
	return append(ad, typ)
}

// PassKey is the key Argon2id derives from a passphrase with one salt and
// set of parameters. The images of a chain share it (an incremental takes
// its parent's salt), so a chain costs one derivation to unlock.
type PassKey struct {
	Params Params
	Salt   [16]byte
	kek    [KeySize]byte
}

// NewPassKey derives a key from passphrase with a fresh random salt.
func NewPassKey(passphrase []byte, p Params) (*PassKey, error) {
	if err := p.Check(); err != nil {
		return nil, err
	}
	if len(passphrase) == 0 {
		return nil, errors.New("seal: an empty passphrase")
	}
	pk := &PassKey{Params: p}
	if _, err := rand.Read(pk.Salt[:]); err != nil {
		return nil, fmt.Errorf("seal: random salt: %w", err)
	}
	pk.kek = derive(passphrase, pk.Salt, p)
	return pk, nil
}

func derive(passphrase []byte, salt [16]byte, p Params) [KeySize]byte {
	return [KeySize]byte(argon2.IDKey(passphrase, salt[:], p.Time, p.MemoryKiB, p.Threads, KeySize))
}

func (pk *PassKey) wrap(id [16]byte, key Key) (*PassSlot, error) {
	s := &PassSlot{Params: pk.Params, Salt: pk.Salt}
	n, err := slotNonce()
	if err != nil {
		return nil, err
	}
	s.Nonce = n
	copy(s.Wrapped[:], slotCipher(&pk.kek).Seal(nil, n[:], key[:], slotAD(id, TypePassphrase)))
	return s, nil
}

func (pk *PassKey) unwrap(id [16]byte, s *PassSlot) (Key, bool) {
	if s.Params != pk.Params || s.Salt != pk.Salt {
		return Key{}, false
	}
	k, err := slotCipher(&pk.kek).Open(nil, s.Nonce[:], s.Wrapped[:], slotAD(id, TypePassphrase))
	if err != nil {
		return Key{}, false
	}
	return Key(k), true
}

// Lock says who can unlock a new image: the holders of a passphrase, of
// the identities of some X25519 recipients, or both.
type Lock struct {
	Pass       *PassKey
	Recipients []string // age1...
}

// ParseRecipient checks an age X25519 public key ("age1...").
func ParseRecipient(s string) error {
	_, err := age.ParseX25519Recipient(s)
	return err
}

// Slots makes the key slots of image id that wrap key for l's holders.
func (l *Lock) Slots(id [16]byte, key Key) (*Slots, error) {
	s := &Slots{Generation: 1}
	if l.Pass != nil {
		p, err := l.Pass.wrap(id, key)
		if err != nil {
			return nil, err
		}
		s.Pass = p
	}
	if len(l.Recipients) > 0 {
		r, list, err := recipientSlots(id, key, l.Recipients)
		if err != nil {
			return nil, err
		}
		s.Recipients, s.List = r, list
	}
	if s.Pass == nil && s.Recipients == nil {
		return nil, errors.New("seal: no passphrase and no recipient to lock the image with")
	}
	return s, nil
}

// recipientSlots encrypts id || key to the recipients with age, and seals
// their list with the data key: an identity holder learns the data key,
// and whoever holds the data key (passwd) can encrypt it again to a
// changed list, which age's stanzas do not reveal.
func recipientSlots(id [16]byte, key Key, recipients []string) (stanzas, list []byte, err error) {
	var rs []age.Recipient
	for _, r := range recipients {
		x, err := age.ParseX25519Recipient(r)
		if err != nil {
			return nil, nil, fmt.Errorf("recipient %q: %w", r, err)
		}
		rs = append(rs, x)
	}
	var buf bytes.Buffer
	w, err := age.Encrypt(&buf, rs...)
	if err != nil {
		return nil, nil, fmt.Errorf("seal: %w", err)
	}
	w.Write(id[:])
	w.Write(key[:])
	if err := w.Close(); err != nil {
		return nil, nil, fmt.Errorf("seal: %w", err)
	}
	n, err := slotNonce()
	if err != nil {
		return nil, nil, err
	}
	list = key.listCipher().Seal(n[:], n[:], []byte(strings.Join(recipients, "\n")), slotAD(id, TypeList))
	return buf.Bytes(), list, nil
}

// Recipients opens the recipient list of image id's slots s with its data
// key.
func (k *Key) Recipients(id [16]byte, s *Slots) ([]string, error) {
	if s.List == nil {
		return nil, nil
	}
	b, err := k.listCipher().Open(nil, s.List[:slotNonceSize], s.List[slotNonceSize:], slotAD(id, TypeList))
	if err != nil {
		return nil, fmt.Errorf("the recipient list does not open: %w", ErrOpen)
	}
	return strings.Split(string(b), "\n"), nil
}

// Rewrap returns s changed as asked, for the same image and data key:
// pass (if not nil) replaces the passphrase slot, removePass drops it,
// recipients (if not nil) replaces the recipients. Generation is one more.
func Rewrap(id [16]byte, key Key, s *Slots, pass *PassKey, removePass bool, recipients []string) (*Slots, error) {
	out := *s
	out.Generation = s.Generation + 1
	switch {
	case pass != nil:
		p, err := pass.wrap(id, key)
		if err != nil {
			return nil, err
		}
		out.Pass = p
	case removePass:
		out.Pass = nil
	}
	if recipients != nil {
		out.Recipients, out.List = nil, nil
		if len(recipients) > 0 {
			r, list, err := recipientSlots(id, key, recipients)
			if err != nil {
				return nil, err
			}
			out.Recipients, out.List = r, list
		}
	}
	if out.Pass == nil && out.Recipients == nil {
		return nil, errors.New("the image would have no key slot left: keep a passphrase or a recipient")
	}
	return &out, nil
}

// Secrets are what a user gave to unlock images: passphrases, age
// identities, and perhaps a way to ask for a passphrase. Keys derived from
// passphrases are kept, so the images of a chain (which share a salt)
// cost one Argon2id run. Safe for concurrent use.
type Secrets struct {
	Passphrases [][]byte
	Identities  []age.Identity
	// Ask, if set, is called (once) for a passphrase when an image has
	// a passphrase slot and no passphrase was given.
	Ask func() ([]byte, error)

	mu    sync.Mutex
	asked bool
	keks  []kek
}

type kek struct {
	pass int // index in Passphrases
	pk   *PassKey
}

// passKey returns the key of passphrase i for slot s's salt and
// parameters, deriving it once.
func (s *Secrets) passKey(i int, slot *PassSlot) *PassKey {
	for _, k := range s.keks {
		if k.pass == i && k.pk.Salt == slot.Salt && k.pk.Params == slot.Params {
			return k.pk
		}
	}
	pk := &PassKey{Params: slot.Params, Salt: slot.Salt, kek: derive(s.Passphrases[i], slot.Salt, slot.Params)}
	s.keks = append(s.keks, kek{pass: i, pk: pk})
	return pk
}

// openPass tries every passphrase on slot, asking for one if none was
// given and Ask allows; it returns the data key and the key that opened
// it, or nil if none did (tried says whether there was any to try).
func (s *Secrets) openPass(id [16]byte, slot *PassSlot) (key Key, pk *PassKey, tried bool, err error) {
	if len(s.Passphrases) == 0 && s.Ask != nil && !s.asked {
		s.asked = true
		p, err := s.Ask()
		if err != nil {
			return Key{}, nil, false, err
		}
		s.Passphrases = append(s.Passphrases, p)
	}
	for i := range s.Passphrases {
		pk := s.passKey(i, slot)
		if k, ok := pk.unwrap(id, slot); ok {
			return k, pk, true, nil
		}
	}
	return Key{}, nil, len(s.Passphrases) > 0, nil
}

// Unlock returns the data key of image id from its slots: from the
// recipient slot if an identity matches, else from the passphrase slot.
// A failure is ErrWrongPassphrase, ErrNoIdentity or ErrNoSecret (wrapped
// with what the image has), never damage.
func (s *Secrets) Unlock(id [16]byte, slots *Slots) (Key, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	switch {
	case len(s.Identities) == 0:
	case slots.Recipients == nil:
		errs = append(errs, fmt.Errorf("%w (the image has no recipients: it is unlocked by its passphrase)", ErrNoIdentity))
	default:
		k, err := openRecipients(id, slots.Recipients, s.Identities)
		if err == nil {
			return k, nil
		}
		errs = append(errs, err)
	}
	if slots.Pass != nil && (len(s.Identities) == 0 || len(s.Passphrases) > 0) {
		k, pk, tried, err := s.openPass(id, slots.Pass)
		switch {
		case err != nil:
			return Key{}, err
		case pk != nil:
			return k, nil
		case tried:
			errs = append(errs, ErrWrongPassphrase)
		}
	}
	if len(errs) > 0 {
		return Key{}, errors.Join(errs...)
	}
	return Key{}, &NoSecretError{Pass: slots.Pass != nil, Recipients: slots.Recipients != nil}
}

// NoSecretError says an encrypted image was opened with nothing to unlock
// it, and what would: a passphrase, an identity or either.
type NoSecretError struct{ Pass, Recipients bool }

func (e *NoSecretError) Error() string {
	switch {
	case !e.Pass:
		return "the image is encrypted to recipients: give an identity"
	case !e.Recipients:
		return "the image is encrypted with a passphrase: give it"
	}
	return ErrNoSecret.Error()
}

func (e *NoSecretError) Unwrap() error { return ErrNoSecret }

func openRecipients(id [16]byte, stanzas []byte, ids []age.Identity) (Key, error) {
	r, err := age.Decrypt(bytes.NewReader(stanzas), ids...)
	if err != nil {
		var nm *age.NoIdentityMatchError
		if errors.As(err, &nm) {
			return Key{}, ErrNoIdentity
		}
		return Key{}, fmt.Errorf("the recipient slot does not open: %w", err)
	}
	var b [16 + KeySize + 1]byte
	n, err := io.ReadFull(r, b[:])
	if err != io.ErrUnexpectedEOF || n != 16+KeySize {
		return Key{}, fmt.Errorf("the recipient slot holds %d bytes, not %d", n, 16+KeySize)
	}
	if [16]byte(b[:16]) != id {
		return Key{}, errors.New("the recipient slot belongs to another image (id mismatch)")
	}
	return Key(b[16 : 16+KeySize]), nil
}

// ErrNeedPassphrase says a new image cannot get its parent's passphrase
// slot: the parent was unlocked by an identity and no passphrase was
// given.
var ErrNeedPassphrase = errors.New("the parent image is also locked with a passphrase: give it too, so the new image gets it as well")

// LockFor returns the Lock of the image id whose slots are s and data key
// key: the same passphrase (salt and parameters, so the key need not be
// derived again) and the same recipients. An incremental of an encrypted
// image is locked with it.
func (s *Secrets) LockFor(id [16]byte, slots *Slots, key Key) (*Lock, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := &Lock{}
	if slots.Recipients != nil {
		rs, err := key.Recipients(id, slots)
		if err != nil {
			return nil, err
		}
		if len(rs) == 0 {
			return nil, errors.New("the image has a recipient slot but no recipient list")
		}
		l.Recipients = rs
	}
	if slots.Pass != nil {
		for _, k := range s.keks {
			if got, ok := k.pk.unwrap(id, slots.Pass); ok && got == key {
				l.Pass = k.pk
				return l, nil
			}
		}
		k, pk, _, err := s.openPass(id, slots.Pass)
		if err != nil {
			return nil, err
		}
		if pk == nil || k != key {
			return nil, ErrNeedPassphrase
		}
		l.Pass = pk
	}
	return l, nil
}
