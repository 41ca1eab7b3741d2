package ntfs

import (
	"bytes"
	"encoding/binary"
	"fmt"
	iofs "io/fs"
	"path/filepath"
	"strings"

	"github.com/platter-dev/platter/internal/fs/vfs"
)

// NTFS holds symlinks in two forms, both read here as ntfs-3g shows them:
//   - a reparse point ($REPARSE_POINT attribute) tagged symlink (what
//     Windows' mklink makes) or mount point (a junction, mklink /J);
//   - an Interix symlink: a system file whose data is "IntxLNK\x01" and
//     the target in UTF-16 (what ntfs-3g makes for ln -s).
//
// ntfs-3g also makes FIFOs, sockets and devices as Interix system files
// (mkfifo, mknod): an empty one is a FIFO, a one-byte one a socket
// (unless hidden), "IntxCHR\0" or "IntxBLK\0" and two 64-bit numbers a
// device. They are listed as such, and extract, like ntfs-3g's cp,
// does not copy them.
const (
	tagSymlink      = 0xa000000c
	tagMountPoint   = 0xa0000003
	symlinkRelative = 1

	interixSymlink = "IntxLNK\x01"
	interixChar    = "IntxCHR\x00"
	interixBlock   = "IntxBLK\x00"
	interixDevice  = 24         // bytes of an Interix device: magic, major, minor
	interixMaxLink = 8 + 2*4096 // ntfs-3g's bound: the magic and PATH_MAX UTF-16 units
	maxReparse     = 16 << 10   // the largest reparse point NTFS allows
)

// reparse returns the target of f, found in directory dir, if it is
// a symlink or junction reparse point ("" if not).
func reparse(f *file, dir string) (string, error) {
	b, err := f.value(attrReparsePoint, "", maxReparse)
	if isNoAttr(err) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return reparseTarget(dir, b)
}

// interix gives e (a system file, its unnamed $DATA data) the type
// ntfs-3g gives it.
func interix(e vfs.Entry, data *stream, hidden bool) (vfs.Entry, error) {
	switch {
	case data.size == 0 && !hidden:
		e.Mode = iofs.ModeNamedPipe | 0o644
		return e, nil
	case data.size == 1 && !hidden:
		e.Mode = iofs.ModeSocket | 0o644
		return e, nil
	case data.size <= int64(len(interixSymlink)) || data.size > interixMaxLink:
		return e, nil
	}
	b, err := data.all(interixMaxLink)
	if err != nil {
		return e, fmt.Errorf("read its Interix data: %w", err)
	}
	switch {
	case bytes.HasPrefix(b, []byte(interixSymlink)):
		target := utf16String(b[len(interixSymlink):])
		e.Mode, e.Size, e.Target = iofs.ModeSymlink|0o777, int64(len(target)), target
	case len(b) == interixDevice && bytes.HasPrefix(b, []byte(interixChar)):
		e.Mode, e.Size = iofs.ModeDevice|iofs.ModeCharDevice|0o644, 0
	case len(b) == interixDevice && bytes.HasPrefix(b, []byte(interixBlock)):
		e.Mode, e.Size = iofs.ModeDevice|0o644, 0
	}
	return e, nil
}

// reparseTarget decodes a symlink or mount point reparse buffer; other
// reparse points (deduplication, cloud files…) are not links: "".
func reparseTarget(dir string, b []byte) (string, error) {
	le := binary.LittleEndian
	if len(b) < 8 {
		return "", fmt.Errorf("reparse point of %d bytes is too short", len(b))
	}
	tag := le.Uint32(b)
	body := b[8:]
	var head int
	switch tag {
	case tagSymlink:
		head = 12
	case tagMountPoint:
		head = 8
	default:
		return "", nil
	}
	if len(body) < head {
		return "", fmt.Errorf("reparse point %#x of %d bytes is too short", tag, len(b))
	}
	off, n := int(le.Uint16(body[0:])), int(le.Uint16(body[2:]))
	if head+off+n > len(body) {
		return "", fmt.Errorf("reparse point %#x: name at %d+%d is past its end (%d)", tag, off, n, len(body))
	}
	name := utf16String(body[head+off : head+off+n])
	if tag == tagSymlink && le.Uint32(body[8:])&symlinkRelative != 0 {
		return strings.ReplaceAll(name, `\`, "/"), nil
	}
	return windowsTarget(dir, name), nil
}

// windowsTarget turns an absolute Windows target into a Linux one. A
// target on a drive ("\??\C:\dir\file") is taken to be on this volume, as
// ntfs-3g takes it, and made relative to the link's directory so that it
// still points at the same file wherever the files are extracted or
// mounted. Other targets (UNC, volume GUIDs) keep their text, with
// slashes.
func windowsTarget(dir, name string) string {
	name = strings.TrimPrefix(name, `\??\`)
	if len(name) >= 3 && name[1] == ':' && name[2] == '\\' {
		to := "/" + strings.ReplaceAll(name[3:], `\`, "/")
		if rel, err := filepath.Rel(filepath.Join("/", dir), to); err == nil {
			return rel
		}
	}
	if rest, ok := strings.CutPrefix(name, `UNC\`); ok {
		name = `\\` + rest
	}
	return strings.ReplaceAll(name, `\`, "/")
}

// utf16String decodes little-endian UTF-16, up to a NUL if there is one.
func utf16String(b []byte) string {
	for i := 0; i+1 < len(b); i += 2 {
		if b[i] == 0 && b[i+1] == 0 {
			return decodeName(b[:i])
		}
	}
	return decodeName(b)
}
