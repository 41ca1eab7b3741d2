package main

import (
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/platter-dev/platter/internal/codec"
	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/ui"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// How much the commands say: --quiet prints only warnings and errors,
// --verbose adds detail (each partition).
var quiet, verbose bool

// report prints a command's result: with asJSON the value as one JSON
// object on stdout (for scripts, --quiet or not), else the text lines
// unless --quiet.
func report(cmd *cobra.Command, asJSON bool, v any, lines ...string) error {
	out := cmd.OutOrStdout()
	if asJSON {
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(out, "%s\n", b)
		return err
	}
	if quiet {
		return nil
	}
	for _, l := range lines {
		fmt.Fprintln(out, l)
	}
	return nil
}

// displayMode is --progress's choice, silenced by --quiet.
func displayMode(flag string) (ui.Mode, error) {
	mode, err := progressMode(flag)
	if quiet && flag == "auto" {
		mode = ui.Off
	}
	return mode, err
}

func newVersionCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "version",
		Short:   "Print the version of platter and how it was built",
		Example: "  platter version\n  platter version --json",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			v := versionInfo()
			return report(cmd, asJSON, v, fmt.Sprintf("platter %s (%s, %s/%s, zstd encoder: %s, decoder: %s, image format %d)", v.Version, v.Go, v.OS, v.Arch, v.Zstd, v.ZstdDecoder, v.Format))
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

type versionJSON struct {
	Version     string `json:"version"`
	Commit      string `json:"commit,omitempty"`
	Go          string `json:"go"`
	OS          string `json:"os"`
	Arch        string `json:"arch"`
	Zstd        string `json:"zstd_encoder"`
	ZstdDecoder string `json:"zstd_decoder"`
	Format      int    `json:"image_format"`
}

func versionInfo() versionJSON {
	v := versionJSON{Version: version, Go: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH, Zstd: codec.EncoderName, ZstdDecoder: codec.DecoderName, Format: image.Version}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				v.Commit = s.Value
			}
		}
	}
	return v
}

// flagError is the root's answer to a flag it does not know: a usage
// error, with the nearest flag the command has when one is close.
func flagError(cmd *cobra.Command, err error) error {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "unknown flag: --"); ok {
		if best := nearestFlag(cmd, name); best != "" {
			return usagef("%s (did you mean --%s?)", msg, best)
		}
	}
	if shorthand, ok := strings.CutPrefix(msg, "unknown shorthand flag: "); ok {
		return usagef("unknown flag %s (see platter %s --help)", strings.Fields(shorthand)[0], cmd.Name())
	}
	return &usageError{err}
}

// nearestFlag is the flag of cmd whose name is within two edits of name
// (or that name is a prefix of), "" if none.
func nearestFlag(cmd *cobra.Command, name string) string {
	best, bestD := "", 3
	visit := func(f *pflag.Flag) {
		if f.Hidden {
			return
		}
		d := editDistance(name, f.Name)
		if strings.HasPrefix(f.Name, name) && len(name) >= 3 {
			d = min(d, 1)
		}
		if d < bestD {
			best, bestD = f.Name, d
		}
	}
	cmd.Flags().VisitAll(visit)
	cmd.InheritedFlags().VisitAll(visit)
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}
