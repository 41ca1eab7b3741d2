package live

import (
	"context"
	"fmt"
	"time"

	"github.com/platter-dev/platter/internal/freeze"
	"github.com/platter-dev/platter/internal/image"
)

// holder freezes the filesystems mounted from the source, together, when
// asked (before the copy with Freeze, for the last pass with Track), and
// thaws them.
type holder struct {
	points  []string
	limit   time.Duration
	report  Reporter
	ctx     context.Context
	cancel  context.CancelCauseFunc // stops the copy when the freeze ends early
	method  Method
	tracker string

	fr *freeze.Frozen
}

func (h *holder) freeze() error {
	fr, err := freeze.Freeze(h.points, h.limit)
	if err != nil {
		return err
	}
	h.fr = fr
	for _, p := range fr.Synced() {
		h.report.Warn(fmt.Sprintf("%s cannot be frozen: it was synced and is copied as it is (writes to it during the copy may be missed)", p))
	}
	h.report.Frozen(fr.Frozen(), fr.Start())
	// The watchdog: a copy still running when the freeze ends early is
	// not of one instant, and must stop at once.
	go func() {
		select {
		case <-fr.Expired():
			_, err := fr.Thaw()
			h.cancel(fmt.Errorf("%w (--max-freeze is %s): no image was written", err, h.limit))
		case <-h.ctx.Done():
		}
	}()
	return nil
}

// release thaws and describes the snapshot for the image's metadata.
func (h *holder) release() (*image.Snapshot, error) {
	held, err := h.fr.Thaw()
	if err != nil {
		return nil, fmt.Errorf("%w (frozen for %.2fs; --max-freeze is %s): no image was written", err, held.Seconds(), h.limit)
	}
	h.report.Thawed(h.fr.Frozen(), time.Now(), held)
	return &image.Snapshot{Method: string(h.method), Tracker: h.tracker, Instant: h.fr.Start().UTC(), FrozenSeconds: held.Seconds(), Filesystems: h.fr.Frozen(), Synced: h.fr.Synced()}, nil
}

func (h *holder) thaw() {
	if h.fr != nil {
		h.fr.Thaw()
	}
}
