package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/platter-dev/platter/internal/imageset"
	"github.com/platter-dev/platter/internal/store"
	"github.com/platter-dev/platter/internal/store/s3"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// Where images are kept. locate is the one function that reads an IMAGE
// (or directory) argument; every command opens and writes images through
// the store.Place it returns, so every command gets every kind of
// storage, and split volumes on each.

// stdio is the IMAGE argument for standard output (create).
const stdio = "-"

// locate reads an argument that names an image (dir false) or a directory
// of images (dir true: list, prune, --search):
//
//   - "-": standard output, for create's IMAGE (place nil);
//   - s3://BUCKET/KEY, s3://BUCKET/PREFIX/: an object of a bucket, or a
//     prefix of one (openS3);
//   - anything else: a local path.
//
// An image's Place is the directory it is in, and name its name there.
func locate(ctx context.Context, arg string, dir bool) (place store.Place, name string, err error) {
	switch {
	case arg == stdio:
		if dir {
			return nil, "", usagef("- (standard input or output) is not a directory of images")
		}
		return nil, stdio, nil
	case strings.HasPrefix(arg, "s3://"):
		bucket, key, _ := strings.Cut(strings.TrimPrefix(arg, "s3://"), "/")
		if bucket == "" {
			return nil, "", usagef("%s names no bucket: write s3://BUCKET/KEY", arg)
		}
		prefix := key
		if dir {
			if prefix != "" && !strings.HasSuffix(prefix, "/") {
				prefix += "/"
			}
		} else {
			i := strings.LastIndexByte(key, '/')
			prefix, name = key[:i+1], key[i+1:]
			if name == "" {
				return nil, "", usagef("%s names a bucket or a prefix, not an image: end it with the image's name (s3://BUCKET/PREFIX/NAME)", arg)
			}
		}
		p, err := openS3(ctx, bucket, prefix)
		if err != nil {
			return nil, "", err
		}
		return store.Split(p), name, nil
	case dir:
		return store.Split(store.NewDir(arg)), "", nil
	}
	if strings.HasSuffix(arg, "/") {
		return nil, "", usagef("IMAGE %s ends in /: name the image file, like %s", arg, filepath.Join(arg, "disk.platter"))
	}
	return store.Split(store.NewDir(filepath.Dir(arg))), filepath.Base(arg), nil
}

// openS3 makes the Place of a bucket prefix (prefix "" or ending in "/"):
// the server and credentials come from the AWS_* environment and
// --s3-endpoint.
var openS3 = func(ctx context.Context, bucket, prefix string) (store.Place, error) {
	return s3.New(ctx, bucket, prefix, s3.ConfigFromEnv(s3Endpoint))
}

// s3Endpoint is --s3-endpoint.
var s3Endpoint string

// s3EndpointFlag is the help of --s3-endpoint.
const s3EndpointFlag = "the S3 server of s3:// images, like http://127.0.0.1:9000 or https://s3.example.com (default: AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL, else AWS S3); credentials and region come from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN and AWS_REGION"

// imageAt is the Place and name of an image to read: standard input is
// not one: restore, verify and info read "-" themselves (stdin.go).
func imageAt(ctx context.Context, arg string) (store.Place, string, error) {
	p, name, err := locate(ctx, arg, false)
	if err == nil && p == nil {
		return nil, "", usagef("only restore, verify and info read an image from standard input (-): save it to a file first")
	}
	return p, name, err
}

// searchPlaces are the --search directories, in order.
func searchPlaces(ctx context.Context) ([]store.Place, error) {
	var out []store.Place
	for _, d := range searchDirs {
		p, _, err := locate(ctx, d, true)
		if err != nil {
			return nil, fmt.Errorf("--search %s: %w", d, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// tempDir is where the image writer spills its index while writing into
// p: beside the image in a local directory (the same filesystem, which
// has room for the image), else the system's temporary directory.
func tempDir(p store.Place) string {
	if dir, ok := store.Local(p); ok {
		return dir
	}
	return ""
}

// parseSplit reads --split: a volume size of at least 1 MiB, or 0 for
// one piece.
func parseSplit(s string) (int64, error) {
	if s == "" || s == "0" {
		return 0, nil
	}
	n, err := parseBytes("--split", s)
	if err != nil {
		return 0, err
	}
	if n < 1<<20 {
		return 0, usagef("--split takes a volume size of at least 1M (like 4095M for a FAT32 drive, or 1G); %q is smaller", s)
	}
	return n, nil
}

// splitFlag is the help of --split.
const splitFlag = "write IMAGE as numbered volumes of at most SIZE bytes each (IMAGE, IMAGE.002, IMAGE.003, ...; 4095M for a FAT32 drive); readers find them beside IMAGE"

// imageSink starts writing the image arg names: to standard output for
// "-" (see toStdout), else into its Place. It returns the Place too (nil
// for standard output).
func imageSink(ctx context.Context, arg string, opts store.CreateOptions) (store.Sink, store.Place, error) {
	p, name, err := locate(ctx, arg, false)
	if err != nil {
		return nil, nil, err
	}
	if p == nil { // toStdout checked it may be written
		return store.Stream(os.Stdout, "standard output"), nil, nil
	}
	sink, err := p.Create(ctx, name, opts)
	if err != nil {
		return nil, nil, err
	}
	return sink, p, nil
}

// tooLarge explains EFBIG: FAT32 holds files of at most 4 GiB less one
// byte.
func tooLarge(err error) error {
	if errors.Is(err, syscall.EFBIG) {
		return fmt.Errorf("%w: the filesystem takes no file this large (FAT32 stops 1 byte short of 4 GiB): write volumes with --split, like --split 4095M", err)
	}
	return err
}

// localImage reports whether an IMAGE argument is a file (or volumes) in
// a local directory.
func localImage(arg string) bool {
	p, _, err := locate(context.Background(), arg, false)
	if err != nil || p == nil {
		return false
	}
	_, ok := store.Local(p)
	return ok
}

// toStdout prepares create for writing the image to standard output:
// refused on a terminal and with --split; what create prints (its
// summary, --json) goes to standard error instead, and a reader that
// goes away ends the write with an error (EPIPE), not a silent death
// from SIGPIPE.
func toStdout(cmd *cobra.Command, split int64) error {
	if term.IsTerminal(int(os.Stdout.Fd())) {
		return usagef("IMAGE - writes the image to standard output, which is a terminal: redirect it to a file or a pipe (platter create SOURCE - | ssh HOST 'cat > disk.platter')")
	}
	if split > 0 {
		return usagef("--split writes volumes beside IMAGE; standard output (-) is one stream")
	}
	cmd.SetOut(cmd.ErrOrStderr())
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	return nil
}

// readDir reads the images of a directory argument (list, prune) as sets,
// their parents looked for in the --search directories too.
func readDir(ctx context.Context, dir string) (*imageset.Dir, error) {
	p, _, err := locate(ctx, dir, true)
	if err != nil {
		return nil, err
	}
	search, err := searchPlaces(ctx)
	if err != nil {
		return nil, err
	}
	return imageset.Read(ctx, p, search, keyring())
}

// volumeSize is the volume size of a split image (the size of its
// first volume), 0 for one in one piece: what a rewrite keeps unless
// --split says otherwise.
func volumeSize(o store.Object) int64 {
	if vols := store.Volumes(o); len(vols) > 0 {
		return vols[0].Size()
	}
	return 0
}
