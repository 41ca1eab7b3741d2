package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"

	"filippo.io/age"
	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/seal"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// The secrets of encrypted images (docs/security.md): every command that
// reads an image takes --identity and --password-file, or PLATTER_PASSWORD,
// or asks for the passphrase on the terminal when none was given. They are
// read once, when the first encrypted image is opened, and kept for the
// rest of the command: a chain shares its salt, so it costs one Argon2id.

// Environment variables that hold passphrases, for scripts.
const (
	envPassword    = "PLATTER_PASSWORD"
	envNewPassword = "PLATTER_NEW_PASSWORD"
)

var secretFlags struct {
	identities   []string
	passwordFile string
}

func addSecretFlags(root *cobra.Command) {
	f := root.PersistentFlags()
	f.StringArrayVar(&secretFlags.identities, "identity", nil, "unlock encrypted images with this age identity file (platter keygen makes one; repeatable)")
	f.StringVar(&secretFlags.passwordFile, "password-file", "", "the passphrase of encrypted images is the first line of FILE (else $"+envPassword+", else it is asked on the terminal)")
}

// cliKeyring unlocks images with the secrets given on the command line,
// read when first needed.
type cliKeyring struct {
	once    sync.Once
	secrets *seal.Secrets
	err     error
	typed   bool // the passphrase was typed: a child (mount --daemon) needs it passed on
}

var keys cliKeyring

// keyring is what every image of this command is opened with.
func keyring() image.Keyring { return &keys }

func (k *cliKeyring) load() {
	k.secrets = &seal.Secrets{}
	for _, path := range secretFlags.identities {
		ids, err := readIdentities(path)
		if err != nil {
			k.err = err
			return
		}
		k.secrets.Identities = append(k.secrets.Identities, ids...)
	}
	pass, ok, err := givenPassphrase()
	if err != nil {
		k.err = err
		return
	}
	if ok {
		k.secrets.Passphrases = append(k.secrets.Passphrases, pass)
	}
	if !ok && len(k.secrets.Identities) == 0 && onTerminal() {
		k.secrets.Ask = func() ([]byte, error) {
			p, err := ask("Passphrase: ")
			k.typed = err == nil
			return p, err
		}
	}
}

func (k *cliKeyring) loaded() (*seal.Secrets, error) {
	k.once.Do(k.load)
	return k.secrets, k.err
}

// password is the passphrase given to the command, for an image of
// another tool (a Macrium Reflect X image's password): "" if none was
// given and, with ask, none could be asked for on the terminal. A typed
// one is kept for the rest of the command, so it is asked once.
func (k *cliKeyring) password(ask bool) (string, error) {
	s, err := k.loaded()
	if err != nil {
		return "", err
	}
	if len(s.Passphrases) == 0 && ask && s.Ask != nil {
		p, err := s.Ask()
		if err != nil {
			return "", err
		}
		s.Passphrases = append(s.Passphrases, p)
	}
	if len(s.Passphrases) == 0 {
		return "", nil
	}
	return string(s.Passphrases[0]), nil
}

// Unlock implements image.Keyring, adding to a failure what to give.
func (k *cliKeyring) Unlock(id [16]byte, slots *seal.Slots) (seal.Key, error) {
	s, err := k.loaded()
	if err != nil {
		return seal.Key{}, err
	}
	key, err := s.Unlock(id, slots)
	var ns *seal.NoSecretError
	if errors.As(err, &ns) {
		pass := fmt.Sprintf("--password-file FILE or $%s, or type it on a terminal", envPassword)
		msg := "the image is encrypted: give its passphrase (" + pass + ") or an identity (--identity FILE)"
		switch {
		case !ns.Pass:
			msg = "the image is encrypted to recipients: give an identity with --identity FILE"
		case !ns.Recipients:
			msg = "the image is encrypted with a passphrase: give it with " + pass
		}
		return key, &hintError{msg: msg, err: err}
	}
	return key, err
}

// hintError is an error told in the CLI's words.
type hintError struct {
	msg string
	err error
}

func (e *hintError) Error() string { return e.msg }
func (e *hintError) Unwrap() error { return e.err }

// lockOf is the lock of an image made from r: its passphrase (the same
// salt) and its recipients.
func lockOf(r *image.Reader) (*seal.Lock, error) {
	s, err := keys.loaded()
	if err != nil {
		return nil, err
	}
	k := r.Keys()
	l, err := s.LockFor(r.ID(), k.Slots, k.Data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", r.Name(), err)
	}
	return l, nil
}

// givenPassphrase is the passphrase of --password-file, else of
// $PLATTER_PASSWORD; false if neither is given.
func givenPassphrase() ([]byte, bool, error) {
	if secretFlags.passwordFile != "" {
		p, err := readPassFile(secretFlags.passwordFile)
		return p, err == nil, err
	}
	if v, ok := os.LookupEnv(envPassword); ok {
		if v == "" {
			return nil, false, fmt.Errorf("$%s is empty", envPassword)
		}
		return []byte(v), true, nil
	}
	return nil, false, nil
}

// readPassFile reads a passphrase file: its first line, without the line
// ending.
func readPassFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("passphrase file: %w", err)
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	if len(line) == 0 {
		return nil, fmt.Errorf("passphrase file %s: the first line is empty", path)
	}
	return line, nil
}

func readIdentities(path string) ([]age.Identity, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("identity file: %w", err)
	}
	defer f.Close()
	ids, err := age.ParseIdentities(bufio.NewReader(f))
	if err != nil {
		return nil, fmt.Errorf("identity file %s: %w", path, err)
	}
	return ids, nil
}

func onTerminal() bool { return term.IsTerminal(int(os.Stdin.Fd())) }

// ask reads a passphrase typed on the terminal, without echo.
func ask(prompt string) ([]byte, error) {
	return askOn(int(os.Stdin.Fd()), os.Stderr, prompt)
}

// askOn shows prompt on w and reads a line from the terminal fd. Echo is
// off before the prompt is shown, so nothing typed at the prompt is
// echoed, however fast.
func askOn(fd int, w io.Writer, prompt string) ([]byte, error) {
	restore, err := echoOff(fd)
	if err != nil {
		return nil, fmt.Errorf("read passphrase: terminal: %w", err)
	}
	defer restore()
	fmt.Fprint(w, prompt)
	b, err := term.ReadPassword(fd)
	fmt.Fprintln(w)
	if err != nil {
		return nil, fmt.Errorf("read passphrase: %w", err)
	}
	return b, nil
}

// newPassphrase is the passphrase of a new image (create --encrypt) or a
// new one for an image (passwd): from file, else from the environment
// variable env, else typed twice on the terminal.
func newPassphrase(file, env, what string) ([]byte, error) {
	switch v, ok := os.LookupEnv(env); {
	case file != "":
		return readPassFile(file)
	case ok && v != "":
		return []byte(v), nil
	case !onTerminal():
		return nil, usagef("%s needs a passphrase: give it in a file (%s) or in $%s, or run on a terminal to type it", what, map[string]string{envPassword: "--password-file", envNewPassword: "--new-password-file"}[env], env)
	}
	p, err := ask("New passphrase: ")
	if err != nil {
		return nil, err
	}
	if len(p) == 0 {
		return nil, errors.New("the passphrase is empty")
	}
	again, err := ask("Repeat passphrase: ")
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(p, again) {
		return nil, errors.New("the passphrases differ")
	}
	return p, nil
}

// kdfFlag adds the hidden --test-kdf flag: cheap Argon2id parameters for
// tests ("TIME,MEMORY_KIB,THREADS").
func kdfFlag(cmd *cobra.Command, v *string) {
	cmd.Flags().StringVar(v, "test-kdf", "", "for tests: Argon2id time,memory KiB,threads")
	cmd.Flags().MarkHidden("test-kdf")
}

func parseKDF(s string) (seal.Params, error) {
	if s == "" {
		return seal.DefaultParams, nil
	}
	f := strings.Split(s, ",")
	if len(f) != 3 {
		return seal.Params{}, usagef("--test-kdf takes TIME,MEMORY_KIB,THREADS")
	}
	var n [3]uint64
	for i := range f {
		v, err := strconv.ParseUint(f[i], 10, 32)
		if err != nil {
			return seal.Params{}, usagef("--test-kdf: %v", err)
		}
		n[i] = v
	}
	p := seal.Params{Time: uint32(n[0]), MemoryKiB: uint32(n[1]), Threads: uint8(n[2])}
	if err := p.Check(); err != nil {
		return seal.Params{}, usagef("--test-kdf: %v", err)
	}
	return p, nil
}

// newPassKey derives the key of a new passphrase.
func newPassKey(file, env, what, kdf string) (*seal.PassKey, error) {
	params, err := parseKDF(kdf)
	if err != nil {
		return nil, err
	}
	p, err := newPassphrase(file, env, what)
	if err != nil {
		return nil, err
	}
	return seal.NewPassKey(p, params)
}

// childSecrets returns the flags that give a platter this one starts
// (mount --daemon) the secrets given to this one, and the files they
// name: a typed passphrase goes through a pipe, never through the command
// line or the environment. It opens the image first, so a passphrase is
// asked for here, where the terminal is.
func childSecrets(path string) ([]string, []*os.File, error) {
	switch kind := foreignKind(path); kind {
	case kindClonezilla:
		// Not encrypted, and its conversion is the child's to make.
		return nil, nil, nil
	case kindMrimgx:
		// Its conversion is the child's to make; its password is
		// checked here (asked for, if need be) and passed on, and the
		// disks left out are said here, where stderr is the user's.
		d, err := openMrimgx(path, diskFlag, true)
		if err != nil {
			return nil, nil, err
		}
		d.Close()
	default:
		if b, err := openBare(path); err != nil || b != nil {
			// A bare disk image (an .iso) is read in place: no secrets.
			if b != nil {
				b.Close()
			}
			return nil, nil, err
		}
		files, r, err := openImage(path)
		if err != nil {
			return nil, nil, err
		}
		r.Close()
		files.Close()
	}
	var args []string
	for _, id := range secretFlags.identities {
		args = append(args, "--identity", id)
	}
	if secretFlags.passwordFile != "" {
		args = append(args, "--password-file", secretFlags.passwordFile)
	}
	if !keys.typed {
		return args, nil, nil // $PLATTER_PASSWORD goes by the environment
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	_, err = pw.Write(append(bytes.Clone(keys.secrets.Passphrases[0]), '\n'))
	pw.Close()
	if err != nil {
		pr.Close()
		return nil, nil, err
	}
	return append(args, "--password-file", "/dev/fd/3"), []*os.File{pr}, nil
}
