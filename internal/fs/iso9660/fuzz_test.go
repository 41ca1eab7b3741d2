package iso9660

import (
	"bytes"
	"flag"
	"os"
	"testing"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/fs/vfs"
	"github.com/platter-dev/platter/internal/tooltest"
)

// fuzzSize is the size of the fuzzed volumes: the seeds' bytes, then
// zeros.
const fuzzSize = 2 << 20

// FuzzISO9660: b (after the 32 KiB system area, then zeros) detected, walked by Owners, opened (Rock Ridge, Joliet and
// plain names), walked and its boot catalog read: every error is fine,
// a panic or a runaway is not. Seeds are small ISOs made by xorriso and
// genisoimage, from their first volume descriptor, trailing zeros
// cut: the fuzzer is slow with large inputs.
func FuzzISO9660(f *testing.F) {
	// A fuzz worker is given its inputs by the coordinator, which alone
	// uses f.Add's seeds: it makes none.
	worker := flag.Lookup("test.fuzzworker")
	for _, args := range [][]string{
		{"xorriso", "-as", "mkisofs", "-R", "-J", "-b", "boot.img", "-no-emul-boot", "-eltorito-alt-boot", "-e", "boot.img", "-no-emul-boot", "-o", "ISO", "SRC"},
		{"genisoimage", "-quiet", "-R", "-J", "-o", "ISO", "SRC"},
		{"genisoimage", "-quiet", "-D", "-o", "ISO", "SRC"},
		{"xorriso", "-outdev", "ISO", "-map", "SRC", "/", "-set_filter_r", "--zisofs", "/", "--"}, // zisofs
	} {
		if worker != nil && worker.Value.String() == "true" {
			break
		}
		src := makeTree(f)
		iso := f.TempDir() + "/x.iso"
		for i, a := range args {
			switch a {
			case "ISO":
				args[i] = iso
			case "SRC":
				args[i] = src
			}
		}
		tooltest.Run(f, args[0], args[1:]...)
		b, _ := os.ReadFile(iso)
		f.Add(bytes.TrimRight(b[descStart:], "\x00"))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r := &tooltest.SparseReader{B: append(make([]byte, descStart), b...), Size: fuzzSize}
		tooltest.FuzzUsage(Detect(r, r.Size))
		identify(r, r.Size)
		ReadBoot(r, r.Size)
		Owners(r, r.Size, func(o vfs.Owner, at []block.Extent) error {
			for _, e := range at {
				if e.Off < 0 || e.Len <= 0 || e.End() > fuzzSize {
					t.Fatalf("%v: extent %d+%d outside the volume", o, e.Off, e.Len)
				}
			}
			return nil
		})
		fs, err := FS.OpenFiles(r, r.Size)
		tooltest.FuzzFiles(t, fs, err)
	})
}
