package fsread

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"unicode/utf16"

	ntfs "www.velocidex.com/golang/go-ntfs/parser"
)

// NTFS holds symlinks in two forms, both read here as ntfs-3g shows them:
//   - a reparse point ($REPARSE_POINT attribute) tagged symlink (what
//     Windows' mklink makes) or mount point (a junction, mklink /J);
//   - an Interix symlink: a system file whose data is "IntxLNK\x01" and
//     the target in UTF-16 (what ntfs-3g makes for ln -s).
const (
	attrStandardInformation = 0x10
	attrData                = 0x80
	attrReparsePoint        = 0xc0

	tagSymlink      = 0xa000000c
	tagMountPoint   = 0xa0000003
	symlinkRelative = 1

	fileAttrSystem = 0x4
	interixMagic   = "IntxLNK\x01"
	maxLink        = 16 << 10
)

// link returns fi's target if it is a symlink ("" if not), as seen from
// its directory dir.
func (n *ntfsFS) link(dir string, fi *ntfs.FileInfo) (string, error) {
	id, _, _, _, err := ntfs.ParseMFTId(fi.MFTId)
	if err != nil {
		return "", err
	}
	mft, err := n.ctx.GetMFT(id)
	if err != nil {
		return "", err
	}
	var system bool
	var data *ntfs.NTFS_ATTRIBUTE
	for _, a := range mft.EnumerateAttributes(n.ctx) {
		switch a.Type().Value {
		case attrReparsePoint:
			b, err := attrBytes(n.ctx, a)
			if err != nil {
				return "", err
			}
			return reparseTarget(dir, b)
		case attrStandardInformation:
			b, err := attrBytes(n.ctx, a)
			if err != nil {
				return "", err
			}
			system = len(b) >= 0x24 && binary.LittleEndian.Uint32(b[0x20:])&fileAttrSystem != 0
		case attrData:
			if a.Name() == "" {
				data = a
			}
		}
	}
	if !system || data == nil || fi.IsDir || data.DataSize() < int64(len(interixMagic)) || data.DataSize() > maxLink {
		return "", nil
	}
	b, err := attrBytes(n.ctx, data)
	if err != nil || !bytes.HasPrefix(b, []byte(interixMagic)) {
		return "", err
	}
	return utf16String(b[len(interixMagic):]), nil
}

// attrBytes reads a small attribute's value whole.
func attrBytes(ctx *ntfs.NTFSContext, a *ntfs.NTFS_ATTRIBUTE) ([]byte, error) {
	size := a.DataSize()
	if size > maxLink {
		return nil, fmt.Errorf("%s attribute of %d bytes is too large", a.Type().Name, size)
	}
	b := make([]byte, size)
	if n, err := a.Data(ctx).ReadAt(b, 0); int64(n) != size {
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("read the %s attribute: %w", a.Type().Name, err)
	}
	return b, nil
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
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	for i, c := range u {
		if c == 0 {
			u = u[:i]
			break
		}
	}
	return string(utf16.Decode(u))
}
