//go:build !linux

package main

import (
	"errors"

	"github.com/spf13/cobra"
)

func newMountCommand() *cobra.Command {
	return &cobra.Command{Use: "mount IMAGE DIR", Short: "Linux only", RunE: func(*cobra.Command, []string) error {
		return errors.New("mount is supported on Linux only")
	}}
}

func newUmountCommand() *cobra.Command {
	return &cobra.Command{Use: "umount DIR", Short: "Linux only", RunE: func(*cobra.Command, []string) error {
		return errors.New("umount is supported on Linux only")
	}}
}
