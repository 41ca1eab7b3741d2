package image

import (
	"errors"
	"fmt"
)

// ErrNotImage is returned (wrapped) for a file that is not a Platter image.
var ErrNotImage = errors.New("not a Platter image")

// ErrDamaged is matched by every error that means the image's bytes are
// wrong: FormatError, ChunkError and ErrNotImage all answer errors.Is
// (err, ErrDamaged), so a caller can pick the exit code in one place.
var ErrDamaged = errors.New("image damaged")

// FormatError reports a structure of the image that is missing or wrong,
// with the byte offset in the image file where it was found.
type FormatError struct {
	Off int64
	Msg string
	Err error // optional cause
}

func (e *FormatError) Error() string {
	s := fmt.Sprintf("image: %s at byte %d", e.Msg, e.Off)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *FormatError) Unwrap() error { return e.Err }

func (e *FormatError) Is(target error) bool { return target == ErrDamaged }

// ChunkError reports a chunk whose stored bytes fail a check.
type ChunkError struct {
	Entry Entry
	File  string // the image file the frame is in ("" if not known)
	Where string // e.g. "partition 2, bytes 1048576-2097151"
	Msg   string
}

func (e *ChunkError) Error() string {
	in := ""
	if e.File != "" {
		in = " in " + e.File
	}
	return fmt.Sprintf("bad chunk%s: %s (frame at image byte %d): %s", in, e.Where, e.Entry.FrameOff, e.Msg)
}

func (e *ChunkError) Is(target error) bool { return target == ErrDamaged }

type notImageError struct{ msg string }

func (e *notImageError) Error() string { return "image: " + e.msg }
func (e *notImageError) Is(target error) bool {
	return target == ErrNotImage || target == ErrDamaged
}
