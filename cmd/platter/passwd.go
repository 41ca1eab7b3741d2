package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/imageset"
	"github.com/platter-dev/platter/internal/seal"
	"github.com/platter-dev/platter/internal/store"
	"github.com/spf13/cobra"
)

type passwdOptions struct {
	newPasswordFile string
	add, remove     []string
	removePass      bool
	kdf             string
}

func newPasswdCommand() *cobra.Command {
	var opts passwdOptions
	cmd := &cobra.Command{
		Use:   "passwd [flags] IMAGE...",
		Short: "Change the passphrase or the recipients of encrypted images",
		Long: `Passwd changes who can unlock encrypted images: a new passphrase (asked twice
on the terminal, or --new-password-file, or $PLATTER_NEW_PASSWORD), recipients
added or removed, or the passphrase removed. The image is unlocked as any
command unlocks it (--password-file, $PLATTER_PASSWORD, --identity, or the
terminal). Only the key slots at the start of the file are rewritten, in
place and crash-safe; the data is not. An image in S3 (s3://BUCKET/KEY)
is replaced by an object that differs only in its first 32 KiB, made on
the server from the old one: about 5 MiB is sent, whatever its size, and
the old object stays until the new one is complete. Give every image of a set at once:
they share the new passphrase's salt, so a chain unlocks with one key
derivation.

The data key does not change: a copy of the image made before, or someone
who read its data key, still reads it. To lock someone out for good, make
a new image.`,
		Example: `  platter passwd /backup/laptop*.platter                    # a new passphrase for the whole set
  platter passwd --add-recipient age1... /backup/laptop.platter
  platter passwd s3://backups/laptop.platter
  platter passwd --remove-recipient age1... /backup/laptop.platter`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("passwd takes one or more images (usage: %s)", cmd.UseLine())
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return runPasswd(cmd, opts, args)
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.newPasswordFile, "new-password-file", "", "the new passphrase is the first line of FILE (else $"+envNewPassword+", else it is asked twice)")
	f.StringArrayVar(&opts.add, "add-recipient", nil, "let the holder of this age X25519 identity unlock the images (its public key, age1...; repeatable)")
	f.StringArrayVar(&opts.remove, "remove-recipient", nil, "remove this recipient (repeatable)")
	f.BoolVar(&opts.removePass, "remove-passphrase", false, "remove the passphrase slot (recipients must remain)")
	kdfFlag(cmd, &opts.kdf)
	return cmd
}

func runPasswd(cmd *cobra.Command, opts passwdOptions, paths []string) error {
	for _, r := range append(slices.Clone(opts.add), opts.remove...) {
		if err := seal.ParseRecipient(r); err != nil {
			return usagef("%q is not an age X25519 public key (age1...): %v", r, err)
		}
	}
	_, envNew := os.LookupEnv(envNewPassword)
	changePass := opts.newPasswordFile != "" || envNew || len(opts.add)+len(opts.remove) == 0 && !opts.removePass
	if changePass && opts.removePass {
		return usagef("--remove-passphrase and a new passphrase exclude each other")
	}
	// Every image is opened before any is changed: a wrong passphrase
	// for one changes none.
	type target struct {
		o     store.Object
		r     *image.Reader
		place store.Place
		name  string
	}
	var ts []target
	defer func() {
		for _, t := range ts {
			t.r.Close()
			t.o.Close()
		}
	}()
	ctx := cmd.Context()
	for _, p := range paths {
		if p == stdio {
			return usagef("passwd rewrites the key slots of stored images: - (standard input) is not one")
		}
		place, name, err := imageAt(ctx, p)
		if err != nil {
			return err
		}
		o, r, err := openOne(ctx, place, name)
		if err != nil {
			return err
		}
		ts = append(ts, target{o, r, place, name})
		if !r.Encrypted() {
			return usagef("%s is not encrypted: encryption is chosen when an image is made (create --encrypt)", p)
		}
	}
	var pass *seal.PassKey
	if changePass {
		var err error
		if pass, err = newPassKey(opts.newPasswordFile, envNewPassword, "the new passphrase", opts.kdf); err != nil {
			return err
		}
	}
	for _, t := range ts {
		k := t.r.Keys()
		id := [16]byte(t.r.ID())
		var recipients []string
		if len(opts.add)+len(opts.remove) > 0 {
			cur, err := k.Data.Recipients(id, k.Slots)
			if err != nil {
				return fmt.Errorf("%s: %w", t.r.Name(), err)
			}
			recipients = []string{} // not nil: the recipients change
			for _, r := range cur {
				if !slices.Contains(opts.remove, r) {
					recipients = append(recipients, r)
				}
			}
			for _, r := range opts.remove {
				if !slices.Contains(cur, r) {
					return fmt.Errorf("%s: %s is not one of its recipients; nothing was changed", t.r.Name(), r)
				}
			}
			for _, r := range opts.add {
				if !slices.Contains(recipients, r) {
					recipients = append(recipients, r)
				}
			}
		}
		slots, err := seal.Rewrap(id, k.Data, k.Slots, pass, opts.removePass, recipients)
		if err != nil {
			return fmt.Errorf("%s: %w", t.r.Name(), err)
		}
		if err := relock(ctx, t.o, t.r, slots); err != nil {
			return fmt.Errorf("%s: %w", t.r.Name(), err)
		}
		// Read back: both copies whole, the new generation in use.
		o, nr, err := imageset.Open(ctx, t.place, t.name, fixedKey(k.Data))
		if err != nil {
			return fmt.Errorf("%s: the image does not read back after its key slots were written: %w", t.r.Name(), err)
		}
		got, damage := nr.Keys().Slots, nr.SlotDamage()
		nr.Close()
		o.Close()
		if got.Generation != slots.Generation || damage != nil {
			return fmt.Errorf("%s: the key slots did not read back as written (%v)", t.r.Name(), damage)
		}
		var has []string
		if got.Pass != nil {
			has = append(has, "a passphrase ("+got.Pass.Params.String()+")")
		}
		if rs, _ := k.Data.Recipients(id, got); len(rs) > 0 {
			has = append(has, plural(len(rs), "recipient"))
		}
		fmt.Fprintf(cmd.OutOrStdout(), "%s: key slots rewritten; it unlocks with %s\n", t.r.Name(), strings.Join(has, " and "))
	}
	return nil
}

// relock writes slots into the image r read from o. The slots are at the
// start of the image: in its first volume when it is split. A local file
// is written in place, copy by copy (image.Reader.Relock); an object that
// cannot be (S3) is replaced whole by one that differs only there
// (store.Patcher), without sending the rest again.
func relock(ctx context.Context, o store.Object, r *image.Reader, slots *seal.Slots) error {
	first := o
	if vols := store.Volumes(o); len(vols) > 0 {
		first = vols[0].Object
	}
	if p, ok := first.(store.Patcher); ok {
		off, area, err := r.SlotArea(slots)
		if err != nil {
			return err
		}
		return p.Patch(ctx, off, area)
	}
	f, err := os.OpenFile(first.Name(), os.O_RDWR, 0)
	if err != nil {
		return err
	}
	err = r.Relock(f, slots)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// fixedKey is a Keyring that knows the data key already: reading back an
// image whose slots were just written.
type fixedKey seal.Key

func (k fixedKey) Unlock([16]byte, *seal.Slots) (seal.Key, error) { return seal.Key(k), nil }
