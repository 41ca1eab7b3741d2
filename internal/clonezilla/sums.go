package clonezilla

import (
	"bufio"
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/blake2b"
)

// ErrSumMismatch is matched by the error of a file whose digest is not
// the one its *SUMS file lists.
var ErrSumMismatch = errors.New("checksum mismatch")

// sumFiles are the digests ocs-sr writes with -gm, -gs, -gb, -gs5 and
// the hash of each.
var sumFiles = []struct {
	name string
	hash func() hash.Hash
}{
	{"MD5SUMS", md5.New},
	{"SHA1SUMS", sha1.New},
	{"SHA512SUMS", sha512.New},
	{"B2SUMS", func() hash.Hash { h, _ := blake2b.New512(nil); return h }},
}

// SumFiles lists the checksum files the directory has.
func (d *Disk) SumFiles() []string {
	var out []string
	for _, s := range sumFiles {
		if _, err := os.Lstat(filepath.Join(d.Dir, s.name)); err == nil {
			out = append(out, s.name)
		}
	}
	return out
}

// VerifySums checks every file each checksum file of the directory
// lists (MD5SUMS, SHA1SUMS, SHA512SUMS, B2SUMS, when there), reading
// them whole. A listed name must be a file of the directory itself.
func (d *Disk) VerifySums(ctx context.Context) error {
	for _, s := range sumFiles {
		b, err := readSmall(filepath.Join(d.Dir, s.name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("clonezilla: %w", err)
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		line := 0
		for sc.Scan() {
			line++
			f := strings.Fields(sc.Text())
			if len(f) == 0 {
				continue
			}
			if len(f) != 2 {
				return fmt.Errorf("clonezilla: %s line %d: %q is not a digest and a name", s.name, line, sc.Text())
			}
			want, err := hex.DecodeString(f[0])
			name := strings.TrimPrefix(strings.TrimPrefix(f[1], "*"), "./")
			if err != nil || len(want) != s.hash().Size() {
				return fmt.Errorf("clonezilla: %s line %d: bad digest %q", s.name, line, f[0])
			}
			if name != filepath.Base(name) || name == "." || name == ".." {
				return fmt.Errorf("clonezilla: %s line %d: %q is not a file of the image directory", s.name, line, f[1])
			}
			h := s.hash()
			if err := hashFile(ctx, filepath.Join(d.Dir, name), h); err != nil {
				return fmt.Errorf("clonezilla: %s: %w", s.name, err)
			}
			if got := h.Sum(nil); !bytes.Equal(got, want) {
				return fmt.Errorf("clonezilla: %w: %s of %s is %x, %s lists %x", ErrSumMismatch, strings.TrimSuffix(s.name, "SUMS"), name, got, s.name, want)
			}
		}
	}
	return nil
}

func hashFile(ctx context.Context, p string, h hash.Hash) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := os.Lstat(p)
	if err != nil || !st.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", p)
	}
	buf := make([]byte, 1<<20)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := f.Read(buf)
		h.Write(buf[:n])
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
