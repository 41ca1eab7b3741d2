//go:build !linux

package main

import (
	"errors"

	"github.com/spf13/cobra"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/image"
)

func newTrackCommand() *cobra.Command {
	return &cobra.Command{Use: "track start|stop|status|install-unit SOURCE", Short: "Linux only", RunE: func(*cobra.Command, []string) error {
		return errors.New("track is supported on Linux only")
	}}
}

// trackedChanges: no tracking service runs but on Linux.
func trackedChanges(root, source string, parent *image.Reader) ([]block.Extent, string, string) {
	return nil, "read", ""
}
