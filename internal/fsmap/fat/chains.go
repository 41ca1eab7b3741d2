package fat

import (
	"fmt"
	"io"
)

// CheckChains reads the FAT filesystem in r (size bytes) and fails if a
// cluster chain of its first FAT loops back on itself: a reader following
// such a chain (go-diskfs does, collecting every cluster) never ends and
// takes all memory. Chains ending in a free, bad or impossible entry are
// left for the reader to refuse. Memory: the FAT and two bits per
// cluster.
func CheckChains(r io.ReaderAt, size int64) error {
	var bs [512]byte
	if n, err := r.ReadAt(bs[:], 0); n != len(bs) {
		return fmt.Errorf("fat: read boot sector: %w", err)
	}
	b, err := parseBPB(bs[:], size)
	if err != nil {
		return err
	}
	b.r = r
	// Chains of a damaged FAT jump anywhere: read it whole (as go-diskfs
	// does; parseBPB bounded it by the volume), not a piece at a time.
	fatOff := b.reserved * b.bytesPerSector
	b.whole = make([]byte, ((b.clusters+2)*b.entryBits()+7)/8+1)
	if _, err := r.ReadAt(b.whole[:len(b.whole)-1], fatOff); err != nil {
		return fmt.Errorf("fat: read FAT at byte %d: %w", fatOff, err)
	}
	// state: 0 not seen, 1 on the chain being walked, 2 ends well.
	state := make([]byte, (b.clusters+2+3)/4)
	get := func(c int64) byte { return state[c/4] >> (2 * (c % 4)) & 3 }
	set := func(c int64, v byte) {
		state[c/4] = state[c/4]&^(3<<(2*(c%4))) | v<<(2*(c%4))
	}
	last := b.clusters + 1 // the highest cluster number
	for start := int64(2); start <= last; start++ {
		if get(start) != 0 {
			continue
		}
		// Walk from start until the chain ends or meets a chain
		// already known to end; meeting this walk itself is a loop.
		c := start
		for {
			set(c, 1)
			v, err := b.entry(c)
			if err != nil {
				return err
			}
			next := int64(v)
			if next < 2 || next > last || get(next) == 2 {
				break
			}
			if get(next) == 1 {
				return corrupt(b.reserved*b.bytesPerSector, "the cluster chain through cluster %d loops back to cluster %d (a damaged FAT)", c, next)
			}
			c = next
		}
		// Mark the walk as ending well.
		for c := start; get(c) == 1; {
			set(c, 2)
			v, _ := b.entry(c) // read just above
			if next := int64(v); next >= 2 && next <= last {
				c = next
			}
		}
	}
	return nil
}
