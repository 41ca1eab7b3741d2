// Command usedbytes writes the used bytes of a filesystem image, as
// Platter's detector (internal/fsmap) finds them, one after another into
// a new file: the data whose compression and writing are the ceilings
// scripts/bench.sh measures create and restore against.
//
//	go run ./scripts/usedbytes FS OUT
//
// OUT must not exist (it is made 0600, never through a symlink). It
// prints the number of used bytes.
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/fsmap"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: usedbytes FS OUT")
		os.Exit(2)
	}
	n, err := run(os.Args[1], os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, "usedbytes:", err)
		os.Exit(1)
	}
	fmt.Println(n)
}

func run(src, dst string) (int64, error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return 0, err
	}
	u, err := fsmap.Detect(in, st.Size())
	if err != nil {
		return 0, fmt.Errorf("%s: %w", src, err)
	}
	if u == nil {
		return 0, fmt.Errorf("%s: no filesystem Platter knows", src)
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, err
	}
	w := bufio.NewWriterSize(out, 8<<20)
	var total int64
	var werr error
	err = u.Runs(0, u.Len(), func(e block.Extent) {
		if werr != nil {
			return
		}
		var n int64
		n, werr = io.Copy(w, io.NewSectionReader(in, e.Off, e.Len))
		total += n
		if werr == nil && n != e.Len {
			werr = fmt.Errorf("%s: short read at byte %d", src, e.Off+n)
		}
	})
	if err == nil {
		err = werr
	}
	if err == nil {
		err = w.Flush()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(dst)
		return 0, fmt.Errorf("%s: %w", dst, err)
	}
	return total, nil
}
