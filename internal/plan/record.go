package plan

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/platter-dev/platter/internal/store"
)

// RecordDir is the directory, in the destination, that keeps the run
// records: NAME-YYYYMMDD-HHMMSS.json, one per run.
const RecordDir = ".platter-runs"

// Record is what one run did.
type Record struct {
	Plan string `json:"plan"`
	// At is the time the run ran as (--now, else the clock): the time
	// in the image's name and metadata.
	At      time.Time `json:"at"`
	Started time.Time `json:"started"`
	Ended   time.Time `json:"ended"`
	Seconds float64   `json:"seconds"`
	OK      bool      `json:"ok"`
	// Kind is the kind of image made; Scheduled the kind due, when a
	// full image was made instead, and Why says why.
	Kind       string `json:"kind,omitempty"`
	Scheduled  string `json:"scheduled,omitempty"`
	Why        string `json:"why,omitempty"`
	Image      string `json:"image,omitempty"`
	ImageBytes int64  `json:"image_bytes,omitempty"`
	Parent     string `json:"parent,omitempty"`
	// BytesRead is the bytes of the source in use, read (or, for an
	// incremental with a tracker's map, considered).
	BytesRead int64          `json:"bytes_read,omitempty"`
	Prune     *PruneResult   `json:"prune,omitempty"`
	Verify    []VerifyResult `json:"verify,omitempty"`
	Warnings  []string       `json:"warnings,omitempty"`
	Error     string         `json:"error,omitempty"`
	// ChainBroken names the chain that failed (an image of it missing or
	// damaged): the next run makes a full image.
	ChainBroken string `json:"chain_broken,omitempty"`
	// Removed is the image this run made and removed again, since it
	// failed verification: the set is as it was.
	Removed   string      `json:"removed,omitempty"`
	OnFailure *HookResult `json:"on_failure,omitempty"`
	Name      string      `json:"-"` // the record's own name
}

// PruneResult is what prune did after the image was made.
type PruneResult struct {
	Kept    []string `json:"kept"`
	Merged  []string `json:"merged"`
	Deleted []string `json:"deleted"`
	Error   string   `json:"error,omitempty"`
}

// VerifyResult is one image verified after the run.
type VerifyResult struct {
	Image string `json:"image"`
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

// HookResult is the failure command's outcome.
type HookResult struct {
	Command string `json:"command"`
	Exit    int    `json:"exit"`
	Error   string `json:"error,omitempty"`
	Output  string `json:"output,omitempty"`
}

// Records is the place of the run records of the destination dest.
func recordName(plan string, at time.Time, n int) string {
	s := plan + "-" + at.Local().Format("20060102-150405")
	if n > 0 {
		s += fmt.Sprintf("-%d", n)
	}
	return s + ".json"
}

// WriteRecord writes r into p, the records' place, as a new object
// (atomically: the store writes NAME.partial and renames it, or puts
// the object whole), and returns its name.
func WriteRecord(ctx context.Context, p store.Place, r *Record) (string, error) {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", err
	}
	b = append(b, '\n')
	for n := 0; n < 100; n++ {
		name := recordName(r.Plan, r.At, n)
		s, err := p.Create(ctx, name, store.CreateOptions{})
		if errors.Is(err, store.ErrExists) {
			continue
		}
		if err != nil {
			return "", err
		}
		if _, err := s.Write(b); err != nil {
			s.Abort()
			return "", err
		}
		if err := s.Commit(); err != nil {
			return "", err
		}
		r.Name = name
		return store.Path(p, name), nil
	}
	return "", fmt.Errorf("%s: 100 records of the same second", store.Path(p, recordName(r.Plan, r.At, 0)))
}

// ReplaceRecord writes r again over the record WriteRecord made.
func ReplaceRecord(ctx context.Context, p store.Place, r *Record) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	s, err := p.Create(ctx, r.Name, store.CreateOptions{Force: true})
	if err != nil {
		return err
	}
	if _, err := s.Write(append(b, '\n')); err != nil {
		s.Abort()
		return err
	}
	return s.Commit()
}

// maxRecord bounds a record read back: they are small.
const maxRecord = 1 << 20

// Records reads the plan's run records in p, oldest first (by the time
// the runs ran as, then by when they ended). A record that does not
// parse is skipped and named in bad.
func Records(ctx context.Context, p store.Place, plan string) (recs []*Record, bad []string, err error) {
	ents, err := p.List(ctx)
	if err != nil {
		return nil, nil, err
	}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name, plan+"-") || !strings.HasSuffix(e.Name, ".json") {
			continue
		}
		r, err := readRecord(ctx, p, e.Name)
		if err != nil || r.Plan != plan {
			if err != nil {
				bad = append(bad, fmt.Sprintf("%s: %v", store.Path(p, e.Name), err))
			}
			continue
		}
		r.Name = e.Name
		recs = append(recs, r)
	}
	sort.SliceStable(recs, func(i, j int) bool {
		if !recs[i].At.Equal(recs[j].At) {
			return recs[i].At.Before(recs[j].At)
		}
		return recs[i].Ended.Before(recs[j].Ended)
	})
	return recs, bad, nil
}

func readRecord(ctx context.Context, p store.Place, name string) (*Record, error) {
	o, err := p.Open(ctx, name)
	if err != nil {
		return nil, err
	}
	defer o.Close()
	if o.Size() > maxRecord {
		return nil, fmt.Errorf("%d bytes: not a run record", o.Size())
	}
	b, err := io.ReadAll(io.NewSectionReader(o, 0, o.Size()))
	if err != nil {
		return nil, err
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, err
	}
	return &r, nil
}
