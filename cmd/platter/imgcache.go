package main

// The cache of converted foreign images (internal/imgcache).
//
// A foreign image (a Clonezilla directory; a Macrium file) is read by
// converting it into a Platter image, and a compressed partclone image
// can only be decoded front to back, so the conversion is the whole cost
// of opening one. openConverted keeps the Platter image it makes in the
// user's cache, keyed by exactly the files it was made from, so a second
// open of the same image is just opening a Platter image. Where the
// cache is off (--no-cache, PLATTER_CACHE_MAX=0), unusable or full, the
// conversion is made privately, as before: into an unlinked temporary
// file that nothing outlives.

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/platter-dev/platter/internal/backup"
	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/imgcache"
	"github.com/platter-dev/platter/internal/ui"
	"github.com/spf13/cobra"
)

// noCache is --no-cache: convert foreign images privately, neither
// reading nor filling the cache.
var noCache bool

const noCacheFlag = "convert a Clonezilla or Macrium image privately for this command: neither use nor fill the cache of converted images (PLATTER_CACHE_MAX=0 does it always)"

// sinkFor gives a conversion the sink to write its Platter image into,
// for an image of at most need bytes.
type sinkFor func(need int64) (backup.Sink, error)

// openConverted opens the Platter image of the foreign image at path,
// made of files by the converter named kind (its version and settings):
// the cached one when the cache holds one made of exactly these files,
// else the one build writes into the sink it asks for (its errors are
// returned as they are: build names the image in them), kept in the
// cache when the cache takes it, else in a private unlinked temporary
// file. A cached image that does not open as a sound image is removed
// and made again. uncached, if set, says why this image is never cached.
func openConverted(path, kind string, files []string, uncached string, build func(sinkFor) error) (chainFiles, *image.Reader, error) {
	name := path + " (read as a Platter image)"
	cache, key, why := openCache(kind, files, uncached)
	if cache != nil {
		defer cache.Close()
		if f, ok := cache.Get(key); ok {
			cf, r, err := openPrivate(f, name+", cached in "+f.Name(), -1)
			if err == nil {
				noteUsed(cache, key)
				verbosef("%s: converted image read from the cache: %s", path, f.Name())
				return cf, r, nil
			}
			cache.Remove(key)
			warn("%s: the cached conversion %s is damaged (%v): removed, converting again", path, cache.EntryPath(key), err)
		}
	}
	start := time.Now()
	var entry *imgcache.Entry
	var private *os.File
	sinks := func(need int64) (backup.Sink, error) {
		if cache != nil {
			e, err := cache.Put(key, need)
			if err == nil {
				entry = e
				return e, nil
			}
			why = err.Error()
		}
		f, err := os.CreateTemp("", "platter-converted-*.platter")
		if err != nil {
			return nil, err
		}
		os.Remove(f.Name()) // nothing outlives the command, a kill included
		private = f
		o := &privateImage{File: f}
		return o.sink(), nil
	}
	err := build(sinks)
	if err != nil && entry != nil && errors.Is(err, syscall.ENOSPC) && runContext.Err() == nil {
		// The cache's filesystem filled up meanwhile: convert privately.
		why, entry, cache = "the cache's filesystem is full", nil, nil
		err = build(sinks)
	}
	if err != nil {
		if entry != nil {
			entry.Abort() // a no-op if the conversion aborted it already
		}
		if private != nil {
			private.Close()
		}
		return nil, nil, err
	}
	took := time.Since(start).Seconds()
	if entry != nil {
		// A file changed while it was read: the image is of neither
		// state for certain, so it is not kept under the old one's key.
		if now, err := imgcache.Key(kind, files); err != nil || now != key {
			cache.Remove(key)
			verbosef("%s: converted in %.1fs, not cached (its files changed while they were read)", path, took)
			return openPrivate(entry.File(), name, entry.Size())
		}
		verbosef("%s: converted in %.1fs into the cache: %s", path, took, entry.Path())
		cf, r, err := openPrivate(entry.File(), name+", cached in "+entry.Path(), entry.Size())
		if err != nil {
			cache.Remove(key)
			return nil, nil, err
		}
		noteUsed(cache, key)
		return cf, r, nil
	}
	verbosef("%s: converted in %.1fs, not cached (%s)", path, took, why)
	st, err := private.Stat()
	if err != nil {
		private.Close()
		return nil, nil, err
	}
	return openPrivate(private, name, st.Size())
}

// openCache opens the cache and makes the key of files, or says why the
// cache is not used.
func openCache(kind string, files []string, uncached string) (*imgcache.Cache, string, string) {
	switch {
	case uncached != "":
		return nil, "", uncached
	case noCache:
		return nil, "", "--no-cache"
	}
	limit, err := imgcache.Limit()
	if err != nil {
		warn("%v: the cache of converted images is not used", err)
		return nil, "", err.Error()
	}
	if limit == 0 {
		return nil, "", "PLATTER_CACHE_MAX=0"
	}
	dir, err := imgcache.Dir()
	if err != nil {
		return nil, "", err.Error()
	}
	key, err := imgcache.Key(kind, files)
	if err != nil {
		return nil, "", err.Error()
	}
	c, err := imgcache.Open(dir, limit)
	if err != nil {
		warn("%v: the cache of converted images is not used", err)
		return nil, "", err.Error()
	}
	return c, key, ""
}

// openPrivate opens the Platter image in f (size bytes; -1: f's size) as
// the image called name.
func openPrivate(f *os.File, name string, size int64) (chainFiles, *image.Reader, error) {
	if size < 0 {
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, nil, err
		}
		size = st.Size()
	}
	o := &privateImage{File: f, name: name, size: size}
	r, err := image.Open(o, o.size, nil)
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("%s: %w", name, err)
	}
	r.SetName(name)
	return chainFiles{o}, r, nil
}

// usedEntries are the cached conversions this command reads: a command
// that fails on damage in one (a chunk whose hash does not match, found
// only when it is read) removes it, so the next one converts anew.
var usedEntries struct {
	sync.Mutex
	dirs, keys []string
}

func noteUsed(c *imgcache.Cache, key string) {
	usedEntries.Lock()
	defer usedEntries.Unlock()
	usedEntries.dirs = append(usedEntries.dirs, c.Path())
	usedEntries.keys = append(usedEntries.keys, key)
}

// forgetDamagedConversions removes the cached conversions this command
// read when it failed on a damaged image (err, exit code 3).
func forgetDamagedConversions(err error) {
	if err == nil || exitCode(err) != exitDamaged {
		return
	}
	usedEntries.Lock()
	defer usedEntries.Unlock()
	for i, dir := range usedEntries.dirs {
		c, err := imgcache.Open(dir, imgcache.DefaultLimit)
		if err != nil {
			continue
		}
		if c.Remove(usedEntries.keys[i]) == nil {
			warn("the cached conversion %s was removed: the next command converts the image anew", c.EntryPath(usedEntries.keys[i]))
		}
		c.Close()
	}
}

// regularFiles are the regular files directly in dir (a foreign image's
// files: its cache key), symlinks left out.
func regularFiles(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var files []string
	for _, e := range ents {
		if e.Type().IsRegular() {
			files = append(files, filepath.Join(dir, e.Name()))
		}
	}
	sort.Strings(files)
	return files, nil
}

// converterID names this build of platter in a cache key: a new binary
// converts anew (its conversion may differ), the old entries age out.
func converterID() string {
	id := version
	if exe, err := os.Executable(); err == nil {
		if st, err := os.Stat(exe); err == nil {
			id += fmt.Sprintf(" %d %d", st.Size(), st.ModTime().UnixNano())
		}
	}
	return id
}

func verbosef(format string, args ...any) {
	if verbose {
		fmt.Fprintf(os.Stderr, "platter: "+format+"\n", args...)
	}
}

func newCacheCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cache",
		Short: "Show the cache of converted Clonezilla and Macrium images (see clear)",
		Long: `A Clonezilla image directory or a Macrium Reflect X image given as IMAGE
is converted into a Platter image, which is kept in a cache so that the
next command given the same image opens it at once (an encrypted Macrium
image's never is): $PLATTER_CACHE, else
$XDG_CACHE_HOME/platter/converted, else ~/.cache/platter/converted; at most
$PLATTER_CACHE_MAX bytes (default 20G; 0 turns the cache off), the least
recently used conversions removed first. A changed file of the image
makes it convert anew. platter cache shows where the cache is and its size;
platter cache clear empties it.`,
		Example: `  platter cache
  PLATTER_CACHE=/var/tmp/platter-cache platter ls /home/partimag/2024-05-01-img:2 /`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, limit, err := openCacheForCommand()
			if err != nil {
				return err
			}
			defer c.Close()
			used, err := c.Usage()
			if err != nil {
				return err
			}
			state := fmt.Sprintf("limit %s, PLATTER_CACHE_MAX", ui.Bytes(limit))
			if limit == 0 {
				state = "off: PLATTER_CACHE_MAX=0"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %s of converted images (%s)\n", c.Path(), ui.Bytes(used), state)
			return nil
		},
	}
	cmd.AddCommand(&cobra.Command{
		Use:     "clear",
		Short:   "Remove every converted image from the cache",
		Example: "  platter cache clear",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _, err := openCacheForCommand()
			if err != nil {
				return err
			}
			defer c.Close()
			freed, err := c.Clear()
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: removed %s of converted images\n", c.Path(), ui.Bytes(freed))
			return nil
		},
	})
	return cmd
}

func openCacheForCommand() (*imgcache.Cache, int64, error) {
	limit, err := imgcache.Limit()
	if err != nil {
		return nil, 0, usagef("%v", err)
	}
	dir, err := imgcache.Dir()
	if err != nil {
		return nil, 0, err
	}
	// A disabled cache (a limit of 0) is still looked at and cleared.
	c, err := imgcache.Open(dir, cmp.Or(limit, imgcache.DefaultLimit))
	return c, limit, err
}
