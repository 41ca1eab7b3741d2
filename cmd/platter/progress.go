package main

import (
	"os"

	"github.com/platter-dev/platter/internal/ui"
	"golang.org/x/term"
)

// progressMode turns --progress into a display mode: auto shows a bar on
// a terminal and nothing on a pipe.
func progressMode(flag string) (ui.Mode, error) {
	switch flag {
	case "auto":
		if term.IsTerminal(int(os.Stderr.Fd())) {
			return ui.Bar, nil
		}
		return ui.Off, nil
	case "json":
		return ui.JSON, nil
	case "none":
		return ui.Off, nil
	}
	return ui.Off, usagef("--progress must be auto, json or none, not %q", flag)
}

// newProgress is the display of an operation (label) on stderr; a bar
// follows the terminal's width as it changes.
func newProgress(mode ui.Mode, label string) *ui.Progress {
	p := ui.NewProgress(mode, os.Stderr, label)
	p.Width = func() int {
		w, _, err := term.GetSize(int(os.Stderr.Fd()))
		if err != nil {
			return 0
		}
		return w
	}
	return p
}
