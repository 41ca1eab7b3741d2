package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/platter-dev/platter/internal/image"
)

// trackStart starts the tracking service of dev with its maps in maps,
// and stops it when the test ends.
func trackStart(t *testing.T, maps, dev string, extra ...string) {
	t.Helper()
	ok(t, append(append([]string{"track", "start", "--dir", maps}, extra...), dev)...)
	t.Cleanup(func() { run(t, "track", "stop", "--dir", maps, dev) })
}

// trackedImage makes an incremental of parent from dev (unmounted) with
// the maps in maps and returns create's summary.
func trackedImage(t *testing.T, maps, parent, dev, img string, extra ...string) createJSON {
	t.Helper()
	var s createJSON
	out := ok(t, append(append([]string{"create", "--json", "--progress", "none", "--track-dir", maps, "--incremental", parent}, extra...), dev, img)...)
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("create --json: %v\n%s", err, out)
	}
	return s
}

// trackPID is the process id of the service tracking dev.
func trackPID(t *testing.T, maps, dev string) int {
	t.Helper()
	var st struct {
		PID     int  `json:"pid"`
		Running bool `json:"running"`
	}
	json.Unmarshal([]byte(ok(t, "track", "status", "--json", "--dir", maps, dev)), &st)
	if !st.Running || st.PID == 0 {
		t.Fatalf("track status: not running (%+v)", st)
	}
	return st.PID
}

type createJSON struct {
	ChangedBy   string `json:"changed_by"`
	ChangedNote string `json:"changed_note"`
	ReadChunks  *int   `json:"read_chunks"`
	Chunks      int    `json:"chunks"`
}

// imageMeta reads an image's metadata and entries with the image package.
func imageMeta(t *testing.T, img string) (*image.Metadata, []image.Entry) {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	r, err := image.NewReader(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	m := r.Metadata()
	return m, slices.Clone(r.Entries())
}

// A busy mounted ext4, imaged live across several incrementals whose
// changes come from the tracker's map: each restores to the writer's
// files at its freeze, byte for byte (and the earlier rounds' files as
// they were left), and each read fewer chunks than it holds.
func TestTrackLiveIncrementals(t *testing.T) {
	d := newLiveDisk(t, "ext4")
	maps := t.TempDir()
	trackStart(t, maps, d.part)
	time.Sleep(1500 * time.Millisecond) // the map starts over 1s before the full image
	dir := t.TempDir()
	prev := filepath.Join(dir, "full.platter")
	liveImage(t, d.part, prev)
	type round struct {
		ops []liveOp
	}
	var rounds []round
	for r := 1; r <= 3; r++ {
		wdir := filepath.Join(d.mnt, "live", fmt.Sprint(r))
		if err := os.Mkdir(wdir, 0o755); err != nil {
			t.Fatal(err)
		}
		w := startLiveWriter(t, wdir, 4_000_000, int64(100+r))
		time.Sleep(1500 * time.Millisecond)
		img := filepath.Join(dir, fmt.Sprintf("inc%d.platter", r))
		frozen, thawed := liveImage(t, d.part, img, "--track-dir", maps, "--incremental", prev)
		time.Sleep(300 * time.Millisecond)
		ops := w.Stop()
		rounds = append(rounds, round{ops})
		m, _ := imageMeta(t, img)
		if m.ChangedBy != "tracker" || m.ReadChunks >= m.InUseChunks || m.ReadChunks == 0 {
			t.Fatalf("round %d: changed by %q (%s), read %d of %d chunks; want the tracker's map, and fewer", r, m.ChangedBy, m.ChangedNote, m.ReadChunks, m.InUseChunks)
		}
		t.Logf("round %d: read %d of %d chunks (%s)", r, m.ReadChunks, m.InUseChunks, m.ChangedNote)

		back := filepath.Join(t.TempDir(), "back.img")
		ok(t, "restore", "--yes", "--progress", "none", img, back)
		root := checkedMount(t, "ext4", back)
		verifyAtFreeze(t, filepath.Join(root, "live", fmt.Sprint(r)), ops, frozen, thawed)
		end := time.Now().Add(time.Hour)
		for q := 1; q < r; q++ { // finished before this round: as left
			verifyAtFreeze(t, filepath.Join(root, "live", fmt.Sprint(q)), rounds[q-1].ops, end, end)
		}
		exec.Command("umount", root).Run()
		prev = img
	}
}

type entryKey struct {
	Area  uint32
	Chunk uint64
	Flags uint32
	Hash  [32]byte
}

func entryKeys(es []image.Entry) []entryKey {
	out := make([]entryKey, len(es))
	for i, e := range es {
		out[i] = entryKey{e.Area, e.Chunk, e.Flags, e.Hash}
	}
	return out
}

// Over several rounds of writes, an incremental made from the tracker's
// map and one made by reading everything, of the same source, have the
// same entries: every chunk, its hash and whether the parent holds it;
// with either tracker.
func TestTrackMatchesReadAll(t *testing.T) {
	for _, tracker := range []string{"bpf", "tracefs"} {
		t.Run(tracker, func(t *testing.T) { trackMatchesReadAll(t, tracker) })
	}
}

func trackMatchesReadAll(t *testing.T, tracker string) {
	dev, mnt := mountedExt4(t, 512, "")
	sh(t, "umount", mnt)
	maps := t.TempDir()
	trackStart(t, maps, dev, "--tracker", tracker)
	var st struct {
		Tracker string `json:"tracker"`
	}
	json.Unmarshal([]byte(ok(t, "track", "status", "--json", "--dir", maps, dev)), &st)
	if st.Tracker != tracker {
		t.Fatalf("tracked with %q, want %s", st.Tracker, tracker)
	}
	time.Sleep(1500 * time.Millisecond)
	dir := t.TempDir()
	full := filepath.Join(dir, "full.platter")
	ok(t, "create", "--progress", "none", dev, full)
	prev := full
	var all [][]liveOp
	for r := 1; r <= 4; r++ {
		sh(t, "mount", dev, mnt)
		wdir := filepath.Join(mnt, fmt.Sprint(r))
		os.Mkdir(wdir, 0o755)
		w := startLiveWriter(t, wdir, 8_000_000, int64(200+r))
		time.Sleep(time.Second)
		all = append(all, w.Stop())
		if r%2 == 0 { // and a file of the first round deleted
			os.Remove(filepath.Join(mnt, "1", "big1"))
		}
		sh(t, "umount", mnt)
		a := filepath.Join(dir, fmt.Sprintf("inc%d.platter", r))
		b := filepath.Join(dir, fmt.Sprintf("read%d.platter", r))
		sa := trackedImage(t, maps, prev, dev, a)
		sb := trackedImage(t, maps, prev, dev, b, "--read-all")
		if sa.ChangedBy != "tracker" || sa.ReadChunks == nil || *sa.ReadChunks >= sa.Chunks {
			t.Fatalf("round %d: %+v, want the tracker's map read and fewer chunks than all", r, sa)
		}
		if sb.ChangedBy != "read" {
			t.Fatalf("round %d: --read-all: %+v", r, sb)
		}
		_, ea := imageMeta(t, a)
		_, eb := imageMeta(t, b)
		ka, kb := entryKeys(ea), entryKeys(eb)
		if !slices.Equal(ka, kb) {
			for i := range min(len(ka), len(kb)) {
				if ka[i] != kb[i] {
					t.Errorf("round %d: entry %d: from the map %+v, read %+v", r, i, ka[i], kb[i])
				}
			}
			t.Fatalf("round %d: %d entries from the map, %d read", r, len(ka), len(kb))
		}
		t.Logf("round %d: read %d of %d chunks, %d entries identical to reading everything", r, *sa.ReadChunks, sa.Chunks, len(ka))
		prev = a
	}
	// A differential against the full image, from the epochs since it,
	// is the same as one made by reading everything too.
	da := filepath.Join(dir, "diff.platter")
	db := filepath.Join(dir, "diff-read.platter")
	var sa, sb createJSON
	for _, c := range []struct {
		img   string
		s     *createJSON
		extra []string
	}{{da, &sa, nil}, {db, &sb, []string{"--read-all"}}} {
		out := ok(t, append(append([]string{"create", "--json", "--progress", "none", "--track-dir", maps, "--differential", full}, c.extra...), dev, c.img)...)
		if err := json.Unmarshal([]byte(out), c.s); err != nil {
			t.Fatal(err)
		}
	}
	if sa.ChangedBy != "tracker" || sb.ChangedBy != "read" {
		t.Fatalf("differentials: %+v, %+v", sa, sb)
	}
	_, ea := imageMeta(t, da)
	_, eb := imageMeta(t, db)
	if !slices.Equal(entryKeys(ea), entryKeys(eb)) {
		t.Fatalf("the differential from the map differs from the one read")
	}
	t.Logf("differential: read %d of %d chunks, entries identical to reading everything", *sa.ReadChunks, sa.Chunks)
	// The last incremental restores to every round's files as left.
	back := filepath.Join(t.TempDir(), "back.img")
	ok(t, "restore", "--yes", "--progress", "none", prev, back)
	root := checkedMount(t, "ext4", back)
	end := time.Now().Add(time.Hour)
	for r, ops := range all {
		if r == 0 {
			ops = append(slices.Clone(ops), liveOp{N: len(ops), Kind: liveUnlink, Name: "big1", Start: end.Add(-time.Minute), End: end.Add(-time.Minute)})
		}
		verifyAtFreeze(t, filepath.Join(root, fmt.Sprint(r+1)), ops, end, end)
	}
}

// Whatever could hide a write makes the next incremental read
// everything and say why.
func TestTrackNegativeControls(t *testing.T) {
	// setup makes an unmounted ext4 on a loop device tracked since
	// before its full image.
	setup := func(t *testing.T, extra ...string) (dev, mnt, maps, full string) {
		dev, mnt = mountedExt4(t, 256, "")
		sh(t, "umount", mnt)
		maps = t.TempDir()
		trackStart(t, maps, dev, extra...)
		time.Sleep(1500 * time.Millisecond)
		full = filepath.Join(t.TempDir(), "full.platter")
		ok(t, "create", "--progress", "none", dev, full)
		return
	}
	write := func(t *testing.T, dev, mnt string) {
		sh(t, "mount", dev, mnt)
		if err := os.WriteFile(filepath.Join(mnt, "f"), []byte(strings.Repeat("x", 3<<20)), 0o644); err != nil {
			t.Fatal(err)
		}
		sh(t, "umount", mnt)
	}
	expect := func(t *testing.T, s createJSON, want ...string) {
		t.Helper()
		if s.ChangedBy != "read" {
			t.Fatalf("changed by %q (%s), want read", s.ChangedBy, s.ChangedNote)
		}
		for _, w := range want {
			if !strings.Contains(s.ChangedNote, w) {
				t.Errorf("note %q does not say %q", s.ChangedNote, w)
			}
		}
		t.Logf("read everything: %s", s.ChangedNote)
	}
	t.Run("stopped, written, restarted", func(t *testing.T) {
		dev, mnt, maps, full := setup(t)
		ok(t, "track", "stop", "--dir", maps, dev)
		write(t, dev, mnt) // mounted and written while not running
		ok(t, "track", "start", "--dir", maps, dev)
		s := trackedImage(t, maps, full, dev, filepath.Join(t.TempDir(), "inc.platter"))
		expect(t, s, "the service was not running before then", "the mount count of "+dev+" went from", "while the service was not running")
	})
	t.Run("stopped", func(t *testing.T) {
		dev, mnt, maps, full := setup(t)
		ok(t, "track", "stop", "--dir", maps, dev)
		write(t, dev, mnt)
		s := trackedImage(t, maps, full, dev, filepath.Join(t.TempDir(), "inc.platter"))
		expect(t, s, "the tracking service stopped at")
	})
	t.Run("killed", func(t *testing.T) {
		dev, mnt, maps, full := setup(t)
		if err := exec.Command("kill", "-9", fmt.Sprint(trackPID(t, maps, dev))).Run(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
		write(t, dev, mnt)
		s := trackedImage(t, maps, full, dev, filepath.Join(t.TempDir(), "inc.platter"))
		expect(t, s, "did not answer")
	})
	t.Run("events lost", func(t *testing.T) {
		dev, _, maps, full := setup(t, "--test-fault", "tracefs-overrun")
		// Thousands of small direct writes, past the filesystem's data:
		// more events than the small buffer holds while read slowly.
		sh(t, "dd", "if=/dev/urandom", "of="+dev, "bs=4k", "count=3000", "seek=40000", "oflag=direct", "status=none")
		time.Sleep(2 * time.Second) // for the service to take, and find the loss
		s := trackedImage(t, maps, full, dev, filepath.Join(t.TempDir(), "inc.platter"))
		expect(t, s, "lost events")
	})
	t.Run("gap", func(t *testing.T) {
		dev, mnt, maps, full := setup(t, "--test-gap", "2s")
		pid := trackPID(t, maps, dev)
		sh(t, "kill", "-STOP", fmt.Sprint(pid))
		write(t, dev, mnt)
		time.Sleep(3 * time.Second)
		sh(t, "kill", "-CONT", fmt.Sprint(pid))
		time.Sleep(1500 * time.Millisecond)
		s := trackedImage(t, maps, full, dev, filepath.Join(t.TempDir(), "inc.platter"))
		expect(t, s, "no take for")
	})
	t.Run("reboot", func(t *testing.T) {
		dev, mnt, maps, full := setup(t, "--test-boot-id", "00000000-fake-boot")
		write(t, dev, mnt)
		s := trackedImage(t, maps, full, dev, filepath.Join(t.TempDir(), "inc.platter"))
		expect(t, s, "another boot")
	})
	t.Run("no map", func(t *testing.T) {
		dev, mnt := mountedExt4(t, 256, "")
		sh(t, "umount", mnt)
		full := filepath.Join(t.TempDir(), "full.platter")
		ok(t, "create", "--progress", "none", dev, full)
		s := trackedImage(t, t.TempDir(), full, dev, filepath.Join(t.TempDir(), "inc.platter"))
		expect(t, s, "no tracker map")
	})
	// The control for the controls: the same steps without the fault
	// use the map.
	t.Run("control", func(t *testing.T) {
		dev, mnt, maps, full := setup(t)
		write(t, dev, mnt)
		s := trackedImage(t, maps, full, dev, filepath.Join(t.TempDir(), "inc.platter"))
		if s.ChangedBy != "tracker" {
			t.Fatalf("without a fault: %+v", s)
		}
	})
}

// status says what runs and whether the map is valid; start refuses a
// second service; stop keeps the map, no longer valid; install-unit
// writes a unit systemd-analyze accepts.
func TestTrackCommands(t *testing.T) {
	dev, mnt := mountedExt4(t, 128, "")
	maps := t.TempDir()
	if out := ok(t, "track", "status", "--dir", maps, dev); !strings.Contains(out, "not tracked") {
		t.Errorf("status before start: %s", out)
	}
	trackStart(t, maps, dev)
	_, stderr, code := run(t, "track", "start", "--dir", maps, dev)
	if code == 0 || !strings.Contains(stderr, "tracked already") {
		t.Errorf("a second start: exit %d, %s", code, stderr)
	}
	if err := os.WriteFile(filepath.Join(mnt, "f"), make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	sh(t, "sync")
	time.Sleep(2500 * time.Millisecond)
	var st struct {
		Running     bool  `json:"running"`
		Valid       bool  `json:"valid"`
		MarkedBytes int64 `json:"marked_bytes"`
	}
	if err := json.Unmarshal([]byte(ok(t, "track", "status", "--json", "--dir", maps, dev)), &st); err != nil {
		t.Fatal(err)
	}
	if !st.Running || !st.Valid || st.MarkedBytes < 1<<20 {
		t.Errorf("status while tracking a 1 MiB write: %+v", st)
	}
	out := ok(t, "track", "status", "--dir", maps, dev)
	for _, w := range []string{"tracked with", "ext2/3/4, mount count", "valid:   yes"} {
		if !strings.Contains(out, w) {
			t.Errorf("status does not say %q:\n%s", w, out)
		}
	}
	name, _ := filepath.EvalSymlinks(dev)
	mapFile := filepath.Join(maps, filepath.Base(name), "map.json")
	if fi, err := os.Stat(mapFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("map file %s: %v %v", mapFile, fi, err)
	}
	ok(t, "track", "stop", "--dir", maps, dev)
	out = ok(t, "track", "status", "--dir", maps, dev)
	if !strings.Contains(out, "not tracked now") || !strings.Contains(out, "valid:   no: the tracking service stopped") {
		t.Errorf("status after stop:\n%s", out)
	}

	units := t.TempDir()
	out = ok(t, "track", "install-unit", "--dir", maps, "--unit-dir", units, dev)
	unit := filepath.Join(units, "platter-track-"+filepath.Base(name)+".service")
	if !strings.Contains(out, unit) {
		t.Errorf("install-unit: %s", out)
	}
	text, err := os.ReadFile(unit)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(text), "track start --foreground --dir "+maps+" "+dev) {
		t.Errorf("unit:\n%s", text)
	}
	if fi, _ := os.Stat(unit); fi.Mode().Perm() != 0o644 {
		t.Errorf("unit mode %v", fi.Mode())
	}
	// systemd-analyze verify checks the unit's syntax and that its
	// ExecStart exists and is executable.
	cmd := exec.Command("systemd-analyze", "verify", unit)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("systemd-analyze verify %s: %v\n%s", unit, err, b)
	}
}
