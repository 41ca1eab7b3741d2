// Package ui is the only package that prints: progress bars on a
// terminal, JSON lines for scripts, nothing on a pipe.
package ui

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Mode chooses how progress is shown.
type Mode int

const (
	Off  Mode = iota // nothing
	Bar              // a one-line bar redrawn in place (terminals)
	JSON             // one JSON object per line
)

// Progress reports bytes done of a total. It implements the engines'
// Progress interfaces; Add is safe for concurrent use.
type Progress struct {
	mode  Mode
	w     io.Writer
	label string
	// Width, if set, gives the terminal's width in columns at each
	// redraw (it may change): the bar never wraps onto a new line.
	Width func() int
	// Status, if set, gives a short word on the state at each redraw
	// ("bad: 64 KiB in 1 areas"), shown after the counts.
	Status func() string

	total   atomic.Int64
	done    atomic.Int64
	started time.Time
	stop    chan struct{}
	wg      sync.WaitGroup
	mu      sync.Mutex // one line at a time
}

// NewProgress returns a progress display for an operation named label
// ("create", "restore", "verify") writing to w.
func NewProgress(mode Mode, w io.Writer, label string) *Progress {
	return &Progress{mode: mode, w: w, label: label}
}

// Start begins the display with the total number of bytes.
func (p *Progress) Start(total int64) {
	p.total.Store(total)
	p.started = time.Now()
	if p.mode == Off {
		return
	}
	p.stop = make(chan struct{})
	interval := 200 * time.Millisecond
	if p.mode == JSON {
		interval = time.Second
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				p.draw(false)
			case <-p.stop:
				return
			}
		}
	}()
}

// Add counts n more bytes done.
func (p *Progress) Add(n int64) { p.done.Add(n) }

// Less takes n bytes off the total: bytes counted in it that turned out
// to need no work (an imaged raw area's zero chunks).
func (p *Progress) Less(n int64) { p.total.Add(-n) }

// RescuePhase starts a later pass of a rescue over bytes not read yet:
// noted, and added to the total the bar and the ETA count.
func (p *Progress) RescuePhase(name string, bytes int64) {
	p.total.Add(bytes)
	p.Say(fmt.Sprintf("rescue: %s (%s)", name, Bytes(bytes)))
}

// Say is Note of a plain message: in JSON mode, the object
// {"op": label, "message": text}.
func (p *Progress) Say(text string) {
	if p.mode == JSON {
		b, _ := json.Marshal(struct {
			Op      string `json:"op"`
			Message string `json:"message"`
		}{p.label, text})
		text = string(b)
	}
	p.Note(text)
}

// Finish draws the final state and ends the display. The total becomes
// what was done: a total known only as an upper bound at Start (raw
// areas, whose zero chunks are not counted) ends as the real figure.
func (p *Progress) Finish() {
	if p.stop == nil {
		return
	}
	close(p.stop)
	p.wg.Wait()
	p.stop = nil
	p.total.Store(p.done.Load())
	p.draw(true)
	if p.mode == Bar {
		fmt.Fprintln(p.w)
	}
}

type jsonProgress struct {
	Op         string   `json:"op"`
	Done       int64    `json:"bytes_done"`
	Total      int64    `json:"bytes_total"`
	Rate       float64  `json:"bytes_per_second"`
	ETASeconds *float64 `json:"eta_seconds"` // null while unknown
	Status     string   `json:"status,omitempty"`
	Finished   bool     `json:"finished"`
}

// Note prints a line of news (a JSON object in JSON mode) between the
// progress lines: on a terminal the bar is cleared first and drawn again
// at the next tick. Nothing is printed when the display is off.
func (p *Progress) Note(line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch p.mode {
	case Bar:
		fmt.Fprintf(p.w, "\r\033[K%s\n", line)
	case JSON:
		fmt.Fprintf(p.w, "%s\n", line)
	}
}

func (p *Progress) draw(final bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	done, total := p.done.Load(), p.total.Load()
	secs := time.Since(p.started).Seconds()
	rate := 0.0
	if secs > 0 {
		rate = float64(done) / secs
	}
	// An ETA from less than a second of work, or none, is a guess.
	eta, known := 0.0, rate > 0 && secs >= 1
	if known && total > done {
		eta = float64(total-done) / rate
	}
	status := ""
	if p.Status != nil {
		status = p.Status()
	}
	switch p.mode {
	case JSON:
		jp := jsonProgress{Op: p.label, Done: done, Total: total, Rate: rate, Status: status, Finished: final}
		if known || final {
			jp.ETASeconds = &eta
		}
		b, _ := json.Marshal(jp)
		fmt.Fprintf(p.w, "%s\n", b)
	case Bar:
		width := 80
		if p.Width != nil {
			if w := p.Width(); w > 0 {
				width = w
			}
		}
		fmt.Fprintf(p.w, "\r%s\033[K", barLine(p.label, done, total, rate, eta, known, final, secs, width, status))
	}
}

// barLine lays out one line of the bar in fewer than width columns,
// dropping the least useful parts first when it is narrow.
func barLine(label string, done, total int64, rate, eta float64, known, final bool, secs float64, width int, status string) string {
	pct := 100.0
	if total > 0 {
		pct = min(100, 100*float64(done)/float64(total))
	}
	when := "ETA unknown"
	switch {
	case final:
		when = "in " + clock(secs)
	case known:
		when = "ETA " + clock(eta)
	}
	parts := []string{
		fmt.Sprintf("%5.1f%%", pct),
		Bytes(done) + " / " + Bytes(total),
		when,
		Bytes(int64(rate)) + "/s",
	}
	if status != "" {
		parts = append(parts[:2], append([]string{status}, parts[2:]...)...)
	}
	room := width - 1 // never the last column: some terminals wrap there
	for n := len(parts); n > 0; n-- {
		text := label + " " + strings.Join(parts[:n], "  ")
		if len(text) > room {
			continue
		}
		if bar := room - len(text) - 3; bar >= 10 {
			bar = min(bar, 40)
			fill := int(pct / 100 * float64(bar))
			return label + " [" + strings.Repeat("#", fill) + strings.Repeat(".", bar-fill) + "] " + strings.Join(parts[:n], "  ")
		}
		return text
	}
	return label[:min(len(label), room)]
}

// Bytes formats n with a binary unit: "1.5 GiB".
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func clock(secs float64) string {
	s := int64(secs + 0.5)
	return fmt.Sprintf("%d:%02d:%02d", s/3600, s/60%60, s%60)
}
