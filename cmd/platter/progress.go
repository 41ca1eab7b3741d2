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
