package ntfs

import (
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/platter-dev/platter/internal/tooltest"
)

// openVolume opens img, for tests that patch structures where they are;
// mirror is the byte offset of $MFTMirr.
func openVolume(t testing.TB, img string) (v *volume, mirror int64) {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	st, _ := f.Stat()
	if v, err = open(f, st.Size()); err != nil {
		t.Fatal(err)
	}
	if v.bitmap, err = v.systemData(recBitmap); err != nil {
		t.Fatal(err)
	}
	var bs [512]byte
	f.ReadAt(bs[:], 0)
	return v, int64(binary.LittleEndian.Uint64(bs[0x38:])) * v.clusterSize
}

func copyImage(t testing.TB, img string) string {
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "copy.img")
	os.WriteFile(p, b, 0o644)
	return p
}

func patchAt(t testing.TB, img string, off int64, b []byte) {
	f, err := os.OpenFile(img, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// ntfs3gMount mounts img (read-write: only then does ntfs-3g look at
// $LogFile; with norecover it leaves an unclean one alone) and returns
// what it said and whether it mounted.
func ntfs3gMount(t testing.TB, img string) (string, bool) {
	mnt := t.TempDir()
	out, err := exec.Command("ntfs-3g", "-o", "norecover", img, mnt).CombinedOutput()
	if err == nil {
		exec.Command("fusermount", "-u", mnt).Run()
	}
	if _, lookErr := exec.LookPath("ntfs-3g"); lookErr != nil {
		t.Fatal("ntfs-3g is needed for this test and is not installed")
	}
	return string(out), err == nil
}

// restartPage is a $LogFile restart page as Windows leaves it, valid by
// ntfs-3g's checks, with one log client in use: flags 0 says the volume
// was not shut down cleanly, RESTART_VOLUME_IS_CLEAN that it was.
func restartPage(logSize int64, flags uint16) []byte {
	const page = 4096
	le := binary.LittleEndian
	p := make([]byte, page)
	copy(p, "RSTR")
	le.PutUint16(p[4:], 0x1e)       // update sequence array offset
	le.PutUint16(p[6:], page/512+1) // and count
	le.PutUint32(p[0x10:], page)    // system page size
	le.PutUint32(p[0x14:], page)    // log page size
	le.PutUint16(p[0x18:], 0x30)    // restart area offset
	le.PutUint16(p[0x1a:], 1)       // minor version
	le.PutUint16(p[0x1c:], 1)       // major version
	ra := p[0x30:]
	le.PutUint64(ra, 0x1234)       // current LSN
	le.PutUint16(ra[8:], 1)        // log clients
	le.PutUint16(ra[0xa:], 0xffff) // free list: none
	le.PutUint16(ra[0xc:], 0)      // in-use list: client 0
	le.PutUint16(ra[0xe:], flags)  // flags
	bits := 0
	for s := logSize; s > 0; s >>= 1 {
		bits++
	}
	le.PutUint32(ra[0x10:], uint32(67-bits)) // sequence number bits
	le.PutUint16(ra[0x14:], 0x40+0xa0)       // restart area length
	le.PutUint16(ra[0x16:], 0x40)            // client array offset
	le.PutUint64(ra[0x18:], uint64(logSize)) // file size
	le.PutUint16(ra[0x24:], 0x30)            // log record header length
	le.PutUint16(ra[0x26:], 0x40)            // log page data offset
	client := ra[0x40:]
	le.PutUint16(client[0x10:], 0xffff) // prev client
	le.PutUint16(client[0x12:], 0xffff) // next client
	// Update sequence protection: each 512-byte stride ends with the
	// sequence number, its bytes saved in the array.
	usn := []byte{1, 0}
	copy(p[0x1e:], usn)
	for i := 1; i <= page/512; i++ {
		end := i*512 - 2
		copy(p[0x1e+2*i:], p[end:end+2])
		copy(p[end:], usn)
	}
	return p
}

// TestTrust: a volume made by mkntfs and written by ntfs-3g is trusted;
// one marked dirty, one whose $LogFile holds records to replay (ntfs-3g
// refuses to mount it), one whose $Bitmap misses clusters a file uses
// (ntfsclone refuses it) is untrusted, every cluster counted, with the
// reason said.
func TestTrust(t *testing.T) {
	files := tooltest.Files(t)
	base := tooltest.Garbage(t, 64<<20)
	tooltest.Run(t, "mkntfs", "-q", "-F", "-Q", "-c", "4096", base)
	populate(t, base, files)
	u, err := detectFile(t, base)
	if err != nil {
		t.Fatal(err)
	}
	if u.Untrusted || u.Warning != "" {
		t.Fatalf("a healthy volume is not trusted: %s", u.Warning)
	}
	v, mirror := openVolume(t, base)

	t.Run("dirty", func(t *testing.T) {
		img := copyImage(t, base)
		f, err := v.file(recVolume)
		if err != nil {
			t.Fatal(err)
		}
		off, flagsAt := f.rec.off, int64(-1)
		for _, a := range f.attrs {
			if a.typ == attrVolumeInfo {
				flagsAt = a.off + int64(binary.LittleEndian.Uint16(f.rec.b[a.off-off+0x14:])) + 0xa
			}
		}
		if flagsAt < 0 {
			t.Fatal("no $VOLUME_INFORMATION")
		}
		patchAt(t, img, flagsAt, []byte{byte(volumeIsDirty)})
		patchAt(t, img, mirror+recVolume*v.recordSize+flagsAt-off, []byte{byte(volumeIsDirty)}) // $MFTMirr's copy
		// ntfsinfo refuses a volume "scheduled for check": it sees the flag.
		if out, _ := exec.Command("ntfsinfo", "-m", img).CombinedOutput(); !strings.Contains(string(out), "scheduled for check") {
			t.Fatalf("ntfsinfo does not see the dirty flag:\n%s", out)
		}
		expectUntrusted(t, img, "dirty")
		tooltest.Run(t, "ntfsfix", "-d", img) // clears the flag
		expectTrusted(t, img)
	})

	t.Run("logfile", func(t *testing.T) {
		log, err := v.systemData(recLogFile)
		if err != nil || len(log.runs) == 0 || log.runs[0].lcn < 0 {
			t.Fatalf("$LogFile: %v", err)
		}
		var size int64
		for _, r := range log.runs {
			size += r.n * v.clusterSize
		}
		at := log.runs[0].lcn * v.clusterSize
		for _, tc := range []struct {
			flags   uint16
			unclean bool
		}{{0, true}, {restartIsClean, false}} {
			img := copyImage(t, base)
			patchAt(t, img, at, restartPage(size, tc.flags))
			// ntfs-3g reads the restart page as we do: it calls the volume
			// unclean (and mounts it read-only) or mounts it as it is.
			out, mounts := ntfs3gMount(t, img)
			if !mounts || strings.Contains(out, "unclean") != tc.unclean {
				t.Fatalf("flags %#x: ntfs-3g mounts: %v\n%s", tc.flags, mounts, out)
			}
			if tc.unclean {
				expectUntrusted(t, img, "$LogFile")
			} else {
				expectTrusted(t, img)
			}
		}
	})

	t.Run("sparse file larger than the volume", func(t *testing.T) {
		img := copyImage(t, base)
		mnt := t.TempDir()
		tooltest.Run(t, "ntfs-3g", img, mnt)
		big := filepath.Join(mnt, "big")
		err := os.WriteFile(big, nil, 0o644)
		if err == nil {
			err = os.Truncate(big, 1<<40) // one sparse run of 2^28 clusters
		}
		tooltest.Run(t, "fusermount", "-u", mnt)
		if err != nil {
			t.Fatal(err)
		}
		expectTrusted(t, img)
	})

	t.Run("bitmap misses clusters", func(t *testing.T) {
		img := copyImage(t, base)
		// Clear $Bitmap from the middle of the volume on: files live
		// there.
		half := v.clusters / 2 / 8
		b := make([]byte, (v.clusters+7)/8-half)
		at := v.bitmap.runs[0].lcn*v.clusterSize + half
		if v.bitmap.runs[0].n*v.clusterSize < (v.clusters+7)/8 {
			t.Fatal("$Bitmap is fragmented")
		}
		orig := make([]byte, len(b))
		v.r.ReadAt(orig, at)
		if allZero(orig) {
			t.Fatal("nothing in use in the second half of the volume")
		}
		patchAt(t, img, at, b)
		out, err := exec.Command("ntfsclone", "--save-image", "-O", filepath.Join(t.TempDir(), "x"), img).CombinedOutput()
		if err == nil {
			t.Fatalf("ntfsclone takes the damaged volume:\n%s", out)
		}
		t.Logf("ntfsclone: %s", lastLines(string(out), 3))
		expectUntrusted(t, img, "$Bitmap calls free")
	})
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(l[max(0, len(l)-n):], "\n")
}

func expectUntrusted(t *testing.T, img, want string) {
	t.Helper()
	u, err := detectFile(t, img)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("warning: %s", u.Warning)
	if !u.Untrusted || !strings.Contains(u.Warning, want) {
		t.Fatalf("untrusted %v, warning %q; want untrusted, naming %q", u.Untrusted, u.Warning, want)
	}
	if m := tooltest.LoadUsage(t, u); m.UsedBytes() != m.Len() {
		t.Errorf("an untrusted volume's map has %d of %d bytes used, want all", m.UsedBytes(), m.Len())
	}
}

func expectTrusted(t *testing.T, img string) {
	t.Helper()
	u, err := detectFile(t, img)
	if err != nil {
		t.Fatal(err)
	}
	if u.Untrusted || u.Warning != "" {
		t.Fatalf("not trusted: %s", u.Warning)
	}
}
