package rescue

import (
	"bufio"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Status is the state of a block of the source, as GNU ddrescue's
// mapfile writes it.
type Status byte

const (
	NonTried   Status = '?' // not read yet
	NonTrimmed Status = '*' // a read of it failed; its edges not yet read sector by sector
	NonScraped Status = '/' // trimmed; its sectors not yet read one by one
	Bad        Status = '-' // unreadable sectors (read one by one, and retried)
	Finished   Status = '+' // read
)

func (s Status) valid() bool {
	switch s {
	case NonTried, NonTrimmed, NonScraped, Bad, Finished:
		return true
	}
	return false
}

// Phase is what a rescue is doing, the map's current_status: one of the
// Status letters for the pass working on blocks of that state, or
// Finished.
type Phase = Status

// run is a block of the map: Len bytes from Off, all of one Status.
type run struct {
	Off, Len int64
	Status   Status
}

func (r run) end() int64 { return r.Off + r.Len }

// Map is the state of every byte of a source, in GNU ddrescue's mapfile
// format, so that ddrescuelog reads it and a rescue resumes from it. Its
// runs cover [0, size) in order, neighbours of one status merged. It is
// not safe for parallel use; Rescuer guards it.
type Map struct {
	size  int64
	runs  []run
	pos   int64 // current_pos: where the rescue reads
	phase Phase // current_status
	pass  int   // current_pass
	start time.Time
}

// NewMap is the map of a source of size bytes nothing of which is read.
func NewMap(size int64) *Map {
	m := &Map{size: size, phase: NonTried, pass: 1, start: time.Now()}
	if size > 0 {
		m.runs = []run{{0, size, NonTried}}
	}
	return m
}

// maxLine bounds a mapfile's line: a real one is under 80 bytes.
const maxLine = 4096

// ParseMap reads a mapfile as GNU ddrescue writes it (and Map.WriteTo):
// comment lines, the status line "current_pos current_status
// [current_pass]", then "pos size status" lines in order, contiguous from
// 0. It must cover exactly size bytes: a map of another device is
// refused. Blocks of one status are merged.
func ParseMap(r io.Reader, size int64) (*Map, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 256), maxLine)
	m := &Map{size: size, start: time.Now()}
	line, sawStatus := 0, false
	var end int64
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || text[0] == '#' {
			continue
		}
		f := strings.Fields(text)
		bad := func(why string) error { return fmt.Errorf("mapfile line %d: %s: %q", line, why, text) }
		if !sawStatus {
			if len(f) < 2 || len(f) > 3 {
				return nil, bad("want current_pos current_status [current_pass]")
			}
			pos, err := parseNumber(f[0])
			if err != nil || pos < 0 {
				return nil, bad("bad current_pos")
			}
			if len(f[1]) != 1 {
				return nil, bad("bad current_status")
			}
			ph := Phase(f[1][0])
			switch ph {
			case NonTried, NonTrimmed, NonScraped, Bad, Finished, 'F', 'G':
			default:
				return nil, bad("bad current_status")
			}
			m.pos, m.phase, m.pass = pos, ph, 1
			if len(f) == 3 {
				if m.pass, err = strconv.Atoi(f[2]); err != nil || m.pass < 1 {
					return nil, bad("bad current_pass")
				}
			}
			sawStatus = true
			continue
		}
		if len(f) != 3 || len(f[2]) != 1 {
			return nil, bad("want pos size status")
		}
		pos, err1 := parseNumber(f[0])
		n, err2 := parseNumber(f[1])
		s := Status(f[2][0])
		switch {
		case err1 != nil || err2 != nil || n <= 0:
			return nil, bad("bad pos or size")
		case !s.valid():
			return nil, bad("bad status")
		case pos != end:
			return nil, bad(fmt.Sprintf("block starts at byte %d, the last ended at %d", pos, end))
		case n > size-end:
			return nil, fmt.Errorf("mapfile line %d: block ends past byte %d, the end of the source: it is the map of another device", line, size)
		}
		m.add(run{pos, n, s})
		end = pos + n
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("mapfile line %d: %w", line+1, err)
	}
	if !sawStatus {
		return nil, fmt.Errorf("mapfile: no status line: not a ddrescue mapfile")
	}
	if end != size {
		return nil, fmt.Errorf("mapfile covers %d bytes, the source has %d: it is the map of another device", end, size)
	}
	return m, nil
}

func parseNumber(s string) (int64, error) {
	return strconv.ParseInt(s, 0, 64)
}

// add appends r, merging it into the last run of its status.
func (m *Map) add(r run) {
	if k := len(m.runs) - 1; k >= 0 && m.runs[k].Status == r.Status && m.runs[k].end() == r.Off {
		m.runs[k].Len += r.Len
		return
	}
	m.runs = append(m.runs, r)
}

// find is the index of the run holding byte off (off < size).
func (m *Map) find(off int64) int {
	i, _ := slices.BinarySearchFunc(m.runs, off, func(r run, off int64) int {
		switch {
		case r.end() <= off:
			return -1
		case r.Off > off:
			return 1
		}
		return 0
	})
	return i
}

// Set marks [off, off+n) (within the source) as s.
func (m *Map) Set(off, n int64, s Status) {
	off, end := max(off, 0), min(off+n, m.size)
	if end <= off {
		return
	}
	i := m.find(off)
	j := m.find(end - 1)
	var repl []run
	if first := m.runs[i]; first.Off < off {
		repl = append(repl, run{first.Off, off - first.Off, first.Status})
	}
	repl = append(repl, run{off, end - off, s})
	if last := m.runs[j]; last.end() > end {
		repl = append(repl, run{end, last.end() - end, last.Status})
	}
	// Merge with the neighbours outside [i, j].
	if i > 0 && m.runs[i-1].Status == repl[0].Status {
		i--
		repl[0] = run{m.runs[i].Off, m.runs[i].Len + repl[0].Len, repl[0].Status}
	}
	if j+1 < len(m.runs) && m.runs[j+1].Status == repl[len(repl)-1].Status {
		j++
		k := len(repl) - 1
		repl[k].Len += m.runs[j].Len
	}
	merged := repl[:1]
	for _, r := range repl[1:] {
		if last := &merged[len(merged)-1]; last.Status == r.Status {
			last.Len += r.Len
		} else {
			merged = append(merged, r)
		}
	}
	m.runs = slices.Replace(m.runs, i, j+1, merged...)
}

// Runs calls fn with each run of one status within [off, off+n), in
// order, clipped to it.
func (m *Map) Runs(off, n int64, fn func(off, n int64, s Status)) {
	off, end := max(off, 0), min(off+n, m.size)
	if end <= off {
		return
	}
	for i := m.find(off); i < len(m.runs) && m.runs[i].Off < end; i++ {
		r := m.runs[i]
		lo, hi := max(r.Off, off), min(r.end(), end)
		fn(lo, hi-lo, r.Status)
	}
}

// Bytes is how many bytes of the source are in status s, and in how many
// runs.
func (m *Map) Bytes(s Status) (n int64, areas int) {
	for _, r := range m.runs {
		if r.Status == s {
			n += r.Len
			areas++
		}
	}
	return n, areas
}

// SetPhase records what the rescue does now, at byte pos.
func (m *Map) SetPhase(ph Phase, pos int64) { m.phase, m.pos = ph, pos }

// WriteTo writes the map in GNU ddrescue's mapfile format.
func (m *Map) WriteTo(w io.Writer) (int64, error) {
	b := &strings.Builder{}
	now := time.Now()
	fmt.Fprintf(b, "# Mapfile. Created by Platter (GNU ddrescue's format)\n")
	fmt.Fprintf(b, "# Start time:   %s\n", m.start.Format("2006-01-02 15:04:05"))
	fmt.Fprintf(b, "# Current time: %s\n", now.Format("2006-01-02 15:04:05"))
	if m.phase == Finished {
		fmt.Fprintf(b, "# Finished\n")
	}
	fmt.Fprintf(b, "# current_pos  current_status  current_pass\n")
	fmt.Fprintf(b, "0x%08X     %c               %d\n", m.pos, m.phase, m.pass)
	fmt.Fprintf(b, "#      pos        size  status\n")
	for _, r := range m.runs {
		fmt.Fprintf(b, "0x%08X  0x%08X  %c\n", r.Off, r.Len, r.Status)
	}
	n, err := io.WriteString(w, b.String())
	return int64(n), err
}
