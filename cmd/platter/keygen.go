package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"filippo.io/age"
	"github.com/spf13/cobra"
)

func newKeygenCommand() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "keygen [-o FILE]",
		Short: "Make a key pair for encrypting images to a recipient",
		Long: `Keygen makes an age X25519 key pair. The identity (the secret key) goes to
FILE, readable by its owner only, or to standard output; the public key
("age1...") is printed. Give the public key to create --recipient on the
machine that makes images: it can encrypt but not read them. Keep the
identity where images are read, and pass it as --identity FILE. Lose it
(and every passphrase of the image), and the image cannot be read.`,
		Example: `  platter keygen -o ~/.config/platter/backup.key   # prints age1...
  platter create --recipient age1... /dev/sda /backup/server.platter
  platter restore --identity ~/.config/platter/backup.key /backup/server.platter /dev/sdb`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runKeygen(cmd, out)
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "write the identity to FILE (mode 0600; an existing FILE is not overwritten)")
	return cmd
}

func runKeygen(cmd *cobra.Command, out string) error {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return err
	}
	pub := id.Recipient().String()
	text := fmt.Sprintf("# created: %s by platter keygen\n# public key: %s\n%s\n", time.Now().Format(time.RFC3339), pub, id)
	if out == "" {
		fmt.Fprint(cmd.OutOrStdout(), text)
		fmt.Fprintf(os.Stderr, "Public key: %s\n", pub)
		return nil
	}
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return usagef("%s exists: keygen does not overwrite an identity (images may need it)", out)
	}
	if err != nil {
		return err
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		os.Remove(out)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(out)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(out)
		return err
	}
	fmt.Fprintln(cmd.OutOrStdout(), pub)
	return nil
}
