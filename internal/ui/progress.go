// Package ui is the only package that prints: progress bars on a
// terminal, JSON lines for scripts, nothing on a pipe.
package ui

import (
	"encoding/json"
	"fmt"
	"io"
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

// Finish draws the final state and ends the display.
func (p *Progress) Finish() {
	if p.stop == nil {
		return
	}
	close(p.stop)
	p.wg.Wait()
	p.stop = nil
	p.draw(true)
	if p.mode == Bar {
		fmt.Fprintln(p.w)
	}
}

type jsonProgress struct {
	Op         string  `json:"op"`
	Done       int64   `json:"bytes_done"`
	Total      int64   `json:"bytes_total"`
	Rate       float64 `json:"bytes_per_second"`
	ETASeconds float64 `json:"eta_seconds"`
	Finished   bool    `json:"finished"`
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
	eta := 0.0
	if rate > 0 && total > done {
		eta = float64(total-done) / rate
	}
	switch p.mode {
	case JSON:
		b, _ := json.Marshal(jsonProgress{Op: p.label, Done: done, Total: total, Rate: rate, ETASeconds: eta, Finished: final})
		fmt.Fprintf(p.w, "%s\n", b)
	case Bar:
		pct := 100.0
		if total > 0 {
			pct = 100 * float64(done) / float64(total)
		}
		const width = 30
		fill := int(pct / 100 * width)
		bar := make([]byte, width)
		for i := range bar {
			if i < fill {
				bar[i] = '#'
			} else {
				bar[i] = '.'
			}
		}
		fmt.Fprintf(p.w, "\r%-8s [%s] %5.1f%%  %s / %s  %s/s  ETA %s  ", p.label, bar, pct,
			Bytes(done), Bytes(total), Bytes(int64(rate)), clock(eta))
	}
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
