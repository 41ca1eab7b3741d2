package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// newDocsCommand is the hidden command `make install` writes the man pages
// with: they come from the same command tree as --help, so they cannot
// drift from it, and the build stays one pure-Go-capable binary.
func newDocsCommand() *cobra.Command {
	var manDir string
	cmd := &cobra.Command{
		Use:    "__docs --man DIR",
		Short:  "Write the man pages (for make install)",
		Hidden: true,
		Args:   exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if manDir == "" {
				return usagef("__docs needs --man DIR")
			}
			return runDocs(cmd.Root(), manDir)
		},
	}
	cmd.Flags().StringVar(&manDir, "man", "", "directory to write platter.1 and one page per command into")
	return cmd
}

// runDocs writes a man page for root and each of its visible commands
// into dir (platter.1, platter-create.1, ...). SOURCE_DATE_EPOCH, when
// set, dates them, so a packaged build is reproducible.
func runDocs(root *cobra.Command, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("man page directory: %w", err)
	}
	root.DisableAutoGenTag = true
	header := &doc.GenManHeader{Section: "1", Source: "platter " + version, Manual: "Platter Manual"}
	if err := doc.GenManTree(root, header, dir); err != nil {
		return fmt.Errorf("write man pages to %s: %w", dir, err)
	}
	return nil
}
