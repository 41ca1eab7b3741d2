//go:build bench

package e2e

// The open-image benchmark of `make bench` (scripts/bench.sh runs it with
// -tags bench): the bench filesystem's image read through platter mount
// (FUSE) and platter serve (NBD) against the same bytes read from the
// restored disk file: sequential throughput, and the latency of random
// 4 KiB reads in chunks that hold data.

import (
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestBenchOpen(t *testing.T) {
	dir := benchDir(t)
	src := filepath.Join(dir, "ext4-3g.img")
	img := filepath.Join(dir, "open.platter")
	ok(t, "create", "--force", "--progress", "none", src, img)
	t.Cleanup(func() { os.Remove(img) })
	// The same in 1 MiB chunks (--chunk-size 1M): random reads decode less.
	small := filepath.Join(dir, "open-1m.platter")
	ok(t, "create", "--force", "--progress", "none", "--chunk-size", "1M", src, small)
	t.Cleanup(func() { os.Remove(small) })
	back := filepath.Join(dir, "open-back.img")
	ok(t, "restore", "--yes", "--progress", "none", img, back)
	t.Cleanup(func() { os.Remove(back) })

	// Offsets of random 4 KiB reads: inside chunks that hold data.
	var data []int64
	for _, c := range infoChunks(t, img).Chunks {
		if c.FrameOffset > 0 {
			data = append(data, c.Offset)
		}
	}
	rng := rand.New(rand.NewSource(1))
	offs := make([]int64, 2000)
	for i := range offs {
		offs[i] = data[rng.Intn(len(data))] + rng.Int63n(2048)*4096
	}

	seqFile := func(path string) float64 {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		buf := make([]byte, 1<<20)
		start := time.Now()
		var n int64
		for {
			k, err := f.Read(buf)
			n += int64(k)
			if err != nil {
				break
			}
		}
		return float64(n) / time.Since(start).Seconds() / (1 << 20)
	}
	randFile := func(path string) []time.Duration {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		buf := make([]byte, 4096)
		var lat []time.Duration
		for _, off := range offs {
			s := time.Now()
			if _, err := f.ReadAt(buf, off); err != nil {
				t.Fatal(err)
			}
			lat = append(lat, time.Since(s))
		}
		return lat
	}
	seqNBD := func(addr, img string) float64 {
		c := nbdRaw(t, addr, "disk")
		defer c.Close()
		size := info(t, img).SourceSize
		start := time.Now()
		for off := int64(0); off < size; off += 1 << 20 {
			if e := nbdRead(t, c, uint64(off), uint32(min(1<<20, size-off))); e != 0 {
				t.Fatalf("NBD read error %d", e)
			}
		}
		return float64(size) / time.Since(start).Seconds() / (1 << 20)
	}
	randNBD := func(addr string) []time.Duration {
		c := nbdRaw(t, addr, "disk")
		defer c.Close()
		var lat []time.Duration
		for _, off := range offs {
			s := time.Now()
			if e := nbdRead(t, c, uint64(off), 4096); e != 0 {
				t.Fatalf("NBD read error %d", e)
			}
			lat = append(lat, time.Since(s))
		}
		return lat
	}
	pct := func(lat []time.Duration, p int) time.Duration {
		s := slices.Clone(lat)
		slices.Sort(s)
		return s[(len(s)-1)*p/100]
	}
	drop := func() { sh(t, "sync"); os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0) }

	var rows []string
	row := func(name string, seq float64, lat []time.Duration) {
		rows = append(rows, fmt.Sprintf("| %-43s | %8.0f MiB/s | %9v | %9v |", name, seq, pct(lat, 50).Round(time.Microsecond), pct(lat, 99).Round(time.Microsecond)))
	}
	// The raw disk file, from the disk (caches dropped) and from memory.
	drop()
	seq := seqFile(back)
	drop()
	row("restored disk file, cold", seq, randFile(back))
	row("restored disk file, cached", seqFile(back), randFile(back))
	for _, c := range []struct{ img, label string }{{img, ""}, {small, ", 1 MiB chunks"}} {
		// FUSE: a fresh mount each time, so neither the kernel's cache
		// nor platter's holds the data.
		mnt := mountDaemon(t, c.img)
		drop()
		seq = seqFile(filepath.Join(mnt, "disk.img"))
		run(t, "umount", mnt)
		mnt = mountDaemon(t, c.img)
		drop()
		row("platter mount (FUSE)"+c.label, seq, randFile(filepath.Join(mnt, "disk.img")))
		// NBD: a fresh server each time.
		addr, _ := startServe(t, c.img)
		drop()
		seq = seqNBD(addr, c.img)
		addr, _ = startServe(t, c.img)
		drop()
		row("platter serve (NBD)"+c.label, seq, randNBD(addr))
	}
	st8, _ := os.Stat(img)
	st1, _ := os.Stat(small)
	fmt.Printf("\nimage in 8 MiB chunks: %.1f MiB; in 1 MiB chunks: %.1f MiB (%+.1f %%)\n", float64(st8.Size())/(1<<20), float64(st1.Size())/(1<<20), 100*(float64(st1.Size())/float64(st8.Size())-1))

	fmt.Printf("\nReading an image without restoring it: %s ext4 image (%d MiB used), sequential 1 MiB reads of the whole disk, %d random 4 KiB reads in chunks that hold data\n\n",
		filepath.Base(src), info(t, img).Partitions[0].UsedBytes>>20, len(offs))
	fmt.Println("| read through                                | sequential     | random p50 | random p99 |")
	fmt.Println("|---------------------------------------------|----------------|-----------|-----------|")
	fmt.Println(strings.Join(rows, "\n"))
}
