//go:build !linux

package main

import (
	"errors"

	"github.com/spf13/cobra"
)

func newPlanCommand() *cobra.Command {
	return &cobra.Command{Use: "plan run|status|install|uninstall|restore", Short: "Linux only", RunE: func(*cobra.Command, []string) error {
		return errors.New("plans run on Linux only (they are run by systemd)")
	}}
}
