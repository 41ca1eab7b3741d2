// Command platter makes, checks, describes and restores disk images.
package main

import (
	"context"
	"errors"
	"fmt"
	"github.com/platter-dev/platter/internal/freeze"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/platter-dev/platter/internal/backup"
	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/codec"
	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/live"
	"github.com/platter-dev/platter/internal/outfile"
	"github.com/platter-dev/platter/internal/restore"
	"github.com/spf13/cobra"
)

const version = "0.1.0"

// Exit codes, chosen here and nowhere else.
const (
	exitOK      = 0
	exitFailed  = 1
	exitUsage   = 2
	exitDamaged = 3
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	// The thaw guard that --snapshot freeze starts (internal/freeze).
	if len(args) > 0 && args[0] == freeze.GuardCommand {
		if err := freeze.RunGuard(args[1:]); err != nil {
			fmt.Fprintf(os.Stderr, "platter: %v\n", err)
			return exitFailed
		}
		return exitOK
	}
	// PLATTER_CPUPROFILE=FILE writes a CPU profile (docs/performance.md).
	if path := os.Getenv("PLATTER_CPUPROFILE"); path != "" {
		if f, err := os.Create(path); err == nil {
			pprof.StartCPUProfile(f)
			defer func() { pprof.StopCPUProfile(); f.Close() }()
		}
	}
	ctx, interrupted := onSignal()
	runContext = ctx
	root := newRootCommand()
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if code := interrupted(); code != 0 {
		fmt.Fprintf(os.Stderr, "platter: interrupted\n")
		return code
	}
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(os.Stderr, "platter: %s\n", oneLine(err.Error()))
	forgetDamagedConversions(err)
	return exitCode(err)
}

// runContext is the context of the command being run, for what runs
// below the commands' own functions (openImage's Clonezilla conversion).
var runContext = context.Background()

// signalGrace is how long a command has to stop cleanly (remove what it
// half-made, thaw what it froze) after SIGINT or SIGTERM before platter
// exits anyway; a second signal exits at once.
const signalGrace = 3 * time.Second

// onSignal returns a context that SIGINT and SIGTERM cancel, and a
// function that gives the exit code for the signal received (128 + its
// number, as shells report it), or 0 if none came.
func onSignal() (context.Context, func() int) {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	var got atomic.Int32
	go func() {
		s := <-sigs
		got.Store(int32(128 + s.(syscall.Signal)))
		cancel()
		select {
		case <-sigs:
		case <-time.After(signalGrace):
		}
		fmt.Fprintf(os.Stderr, "platter: interrupted\n")
		os.Exit(int(got.Load()))
	}()
	return ctx, func() int { return int(got.Load()) }
}

// childError is the failure of a platter process this one started (a
// mount --daemon child): its message and exit code are this one's.
type childError struct {
	code int
	msg  string
}

func (e *childError) Error() string { return e.msg }

func exitCode(err error) int {
	var child *childError
	if errors.As(err, &child) && child.code > 0 {
		return child.code
	}
	var ue *usageError
	var bue *backup.UsageError
	var lue *live.UsageError
	var pe *restore.PartitionError
	var ce *block.CorruptError
	var se *skippedError
	switch {
	case errors.As(err, &ue), errors.As(err, &bue), errors.As(err, &lue), errors.As(err, &pe), errors.Is(err, image.ErrNotImage), errors.Is(err, outfile.ErrNotFile):
		// A file that is not an image at all was named by mistake, or
		// a device or directory where a file is to be written.
		return exitUsage
	case errors.Is(err, image.ErrDamaged), errors.As(err, &ce), errors.As(err, &se), foreignDamaged(err):
		return exitDamaged
	case strings.HasPrefix(err.Error(), "unknown command"), strings.HasPrefix(err.Error(), "unknown flag"):
		return exitUsage
	}
	return exitFailed
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// usageError marks a command line that cannot be run as written.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef("%s takes %d arguments, got %d (usage: %s)", cmd.Name(), n, len(args), cmd.UseLine())
		}
		return nil
	}
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "platter",
		Short: "Make, check, describe and restore disk images",
		Long: `Platter makes, checks, describes and restores disk images. Every command
that reads an IMAGE also takes a Clonezilla image directory (ocs-sr
savedisk's or saveparts') or a Macrium Reflect X image (.mrimgx), converted once and
kept in a cache (platter cache); platter import converts either into a
Platter image.`,
		Version:       version + " (zstd encoder: " + codec.EncoderName + ", decoder: " + codec.DecoderName + ")",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(flagError)
	root.PersistentFlags().StringArrayVar(&searchDirs, "search", nil, "where to look for the parent images of an incremental or differential image, after its own directory (repeatable)")
	root.PersistentFlags().BoolVarP(&quiet, "quiet", "q", false, "print only warnings and errors (no progress, no summary)")
	root.PersistentFlags().BoolVarP(&verbose, "verbose", "v", false, "print more: each partition of what was made, written or checked")
	root.PersistentFlags().StringVar(&s3Endpoint, "s3-endpoint", "", s3EndpointFlag)
	root.PersistentFlags().BoolVar(&noCache, "no-cache", false, noCacheFlag)
	addSecretFlags(root)
	root.AddCommand(newVersionCommand())
	root.AddCommand(newCreateCommand(), newCloneCommand(), newVerifyCommand(), newInfoCommand(), newRestoreCommand(), newConsolidateCommand(), newPruneCommand(), newListCommand(), newServeCommand(), newMountCommand(), newUmountCommand(), newLsCommand(), newExtractCommand())
	root.AddCommand(newKeygenCommand(), newPasswdCommand(), newConvertCommand(), newBootCommand(), newImportCommand(), newCacheCommand())
	root.AddCommand(newTrackCommand(), newPlanCommand())
	root.AddCommand(newDocsCommand()) // hidden: man pages for make install
	return root
}

// warn prints a warning to stderr; the CLI is the only place that prints.
func warn(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "platter: warning: "+format+"\n", args...)
}
