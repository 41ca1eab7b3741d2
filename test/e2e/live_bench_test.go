//go:build bench

package e2e

// The live-imaging benchmark of `make bench` (scripts/bench.sh runs it
// with -tags bench): for each filesystem, the same filesystem imaged
// unmounted and imaged live under a 25 MB/s writer, alternating, ROUNDS
// times. It reports the freeze writers saw and the time of a live image
// against an unmounted one, with the targets of docs/performance.md.

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// benchDir is where scripts/bench.sh keeps its filesystems.
func benchDir(t *testing.T) string {
	dir := os.Getenv("BENCH_DIR")
	if dir == "" {
		t.Fatal("BENCH_DIR is not set: run make bench")
	}
	return dir
}

func TestBenchLive(t *testing.T) {
	dir := benchDir(t)
	rounds, _ := strconv.Atoi(os.Getenv("ROUNDS"))
	if rounds == 0 {
		rounds = 5
	}
	settle := func() {
		sh(t, "sync")
		time.Sleep(3 * time.Second)
	}
	median := func(v []float64) float64 {
		s := slices.Sorted(slices.Values(v))
		return s[(len(s)-1)/2]
	}
	var report, passLog []string
	for _, fs := range []struct {
		name        string
		freezeLimit float64 // ms
	}{{"ext4", 100}, {"xfs", 100}, {"btrfs", 150}} {
		src := filepath.Join(dir, fs.name+"-bench.img")
		if _, err := os.Stat(src); err != nil {
			t.Fatalf("%s: %v (scripts/bench.sh builds it)", src, err)
		}
		// A scratch copy: the writer changes it.
		work := filepath.Join(dir, "live-"+fs.name+".img")
		sh(t, "cp", "--sparse=always", src, work)
		t.Cleanup(func() { os.Remove(work) })
		dev := loop(t, work)
		mnt := t.TempDir()
		img := filepath.Join(dir, "live.platter")
		if only := os.Getenv("BENCH_FS"); only != "" && only != fs.name {
			continue
		}
		var offline, live, frozen []float64
		var passes []string
		for r := range rounds {
			os.Remove(img)
			settle()
			start := time.Now()
			ok(t, "create", "--progress", "none", dev, img)
			offline = append(offline, time.Since(start).Seconds())
			os.Remove(img)

			opts := "rw"
			if fs.name == "xfs" {
				opts = "nouuid"
			}
			sh(t, "mount", "-o", opts, dev, mnt)
			wdir := filepath.Join(mnt, fmt.Sprintf("live-%d", r))
			os.Mkdir(wdir, 0o755)
			settle()
			w := startLiveWriter(t, wdir, 25_000_000, int64(r+1))
			time.Sleep(time.Second)
			start = time.Now()
			ok(t, "create", "--snapshot", "track", "--progress", "none", dev, img)
			live = append(live, time.Since(start).Seconds())
			w.Stop()
			j := info(t, img)
			frozen = append(frozen, j.Snapshot.FrozenSeconds*1000)
			var ps []string
			for _, p := range j.Snapshot.Passes {
				ps = append(ps, fmt.Sprintf("%s %d/%.2fs", p.Kind, p.Chunks, p.Seconds))
			}
			passes = append(passes, strings.Join(ps, ", "))
			os.RemoveAll(wdir)
			sh(t, "umount", mnt)
			os.Remove(img)
		}
		fz, off, lv := median(frozen), median(offline), median(live)
		verdict := func(ok bool) string {
			if ok {
				return "met"
			}
			return "MISSED"
		}
		report = append(report, fmt.Sprintf("| %-5s | %5.0f ms (target ≤ %.0f: %s) | %.2f s | %.2f s | %.2fx (target ≤ 1.3x: %s) |",
			fs.name, fz, fs.freezeLimit, verdict(fz <= fs.freezeLimit), off, lv, lv/off, verdict(lv/off <= 1.3)))
		report = append(report, fmt.Sprintf("|       | every run: freeze %s ms; unmounted %s s; live %s s | | | |", join(frozen, "%.0f"), join(offline, "%.2f"), join(live, "%.2f")))
		passLog = append(passLog, fmt.Sprintf("%s passes (chunks/seconds), each run: %s", fs.name, strings.Join(passes, "; ")))
	}
	fmt.Printf("\nLive imaging under a 25 MB/s writer, median of %d alternating rounds\n\n", rounds)
	fmt.Println("| fs    | freeze (median) | unmounted create | live create | live / unmounted |")
	fmt.Println("|-------|-----------------|------------------|-------------|------------------|")
	fmt.Println(strings.Join(report, "\n"))
	fmt.Println()
	fmt.Println(strings.Join(passLog, "\n"))
}

func join(v []float64, format string) string {
	var s []string
	for _, x := range v {
		s = append(s, fmt.Sprintf(format, x))
	}
	return strings.Join(s, " ")
}
