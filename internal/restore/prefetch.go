package restore

import (
	"context"
	"sync/atomic"

	"github.com/platter-dev/platter/internal/image"
)

// prefetchBytes is how much of the image restore asks the storage to read
// ahead of the chunks its workers have started: enough to keep the disk
// reading while every worker decodes (eight 8 MiB frames), small against
// the page cache.
const prefetchBytes = 64 << 20

// prefetcher asks for the frames of the tasks, in their order, up to
// prefetchBytes ahead of the tasks started. Without it each worker reads
// its frame when it starts the chunk and waits for the disk, and the
// image is read in bursts between the writes of the target.
type prefetcher struct {
	img     *image.Reader
	tasks   []task
	window  int64 // bytes asked for ahead of the tasks started
	started atomic.Int64
	wake    chan struct{}
}

func newPrefetcher(img *image.Reader, tasks []task) *prefetcher {
	return &prefetcher{img: img, tasks: tasks, window: prefetchBytes, wake: make(chan struct{}, 1)}
}

// start counts a task as started (each hands them out in order).
func (p *prefetcher) start() {
	p.started.Add(1)
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// run prefetches until every task's frame was asked for or ctx is done.
// A task is asked for while the frames asked for from the first task not
// started up to it add up to at most the window; a task already started
// is skipped (its worker reads it now).
func (p *prefetcher) run(ctx context.Context) {
	cum := make([]int64, len(p.tasks)+1) // frame bytes asked for before task i
	for i, tk := range p.tasks {
		for {
			s := min(p.started.Load(), int64(i))
			if cum[i]-cum[s] <= p.window {
				break
			}
			select {
			case <-p.wake:
			case <-ctx.Done():
				return
			}
		}
		var n int64
		if !tk.empty && int64(i) >= p.started.Load() {
			n = p.img.Prefetch(tk.e)
		}
		cum[i+1] = cum[i] + n
	}
}
