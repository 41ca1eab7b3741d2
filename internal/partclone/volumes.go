package partclone

import (
	"bytes"
	"compress/bzip2"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz"
	"golang.org/x/sys/unix"
)

// ErrMissingVolume is matched by the error of a split image with a
// volume missing.
var ErrMissingVolume = errors.New("volume missing")

// Volumes lists the files of the (possibly split) image whose first
// volume or whole file is at path: Clonezilla's split names them
// NAME.aa, NAME.ab, ... (or .aaa, ... for more), and a path without such
// a suffix is one file. A gap in the sequence (NAME.ab missing with
// NAME.ac there) is an error naming the missing volume.
func Volumes(path string) ([]string, error) {
	dir, base := filepath.Split(path)
	stem, suf, ok := volumeSuffix(base)
	if !ok {
		return []string{path}, nil
	}
	if suf != strings.Repeat("a", len(suf)) {
		return nil, fmt.Errorf("partclone: %s is not the first volume of its image (that is %s)", path, filepath.Join(dir, stem+"."+strings.Repeat("a", len(suf))))
	}
	ents, err := os.ReadDir(filepath.Clean(dir + "."))
	if err != nil {
		return nil, err
	}
	var have []string
	for _, e := range ents {
		if s, x, ok := volumeSuffix(e.Name()); ok && s == stem && len(x) == len(suf) {
			have = append(have, x)
		}
	}
	sort.Strings(have)
	var out []string
	for i, x := range have {
		if want := volumeName(i, len(suf)); x != want {
			return nil, fmt.Errorf("partclone: %w: %s (the image has %s after it)", ErrMissingVolume, filepath.Join(dir, stem+"."+want), filepath.Join(dir, stem+"."+x))
		}
		out = append(out, filepath.Join(dir, stem+"."+x))
	}
	return out, nil
}

// NextVolume is the name split gives the volume after path ("" for a
// path that is not a volume).
func NextVolume(path string) string {
	dir, base := filepath.Split(path)
	stem, suf, ok := volumeSuffix(base)
	if !ok {
		return ""
	}
	n := 0
	for _, c := range suf {
		n = n*26 + int(c-'a')
	}
	if n+1 >= pow26(len(suf)) {
		return ""
	}
	return filepath.Join(dir, stem+"."+volumeName(n+1, len(suf)))
}

func pow26(n int) int {
	p := 1
	for range n {
		p *= 26
	}
	return p
}

func volumeName(i, width int) string {
	b := make([]byte, width)
	for j := width - 1; j >= 0; j-- {
		b[j] = byte('a' + i%26)
		i /= 26
	}
	return string(b)
}

// volumeSuffix splits NAME.xy (2 or 3 lower-case letters) into NAME, xy.
func volumeSuffix(base string) (stem, suf string, ok bool) {
	i := strings.LastIndexByte(base, '.')
	if i <= 0 {
		return "", "", false
	}
	suf = base[i+1:]
	if len(suf) < 2 || len(suf) > 3 {
		return "", "", false
	}
	for _, c := range suf {
		if c < 'a' || c > 'z' {
			return "", "", false
		}
	}
	// A first volume is always one; a later one only after a
	// compressor's suffix, as Clonezilla names them (a file NAME.pc is
	// not a volume), or after the names of the dd and ntfsclone images,
	// which ocs-sr gives whatever compressed them (NAME.dd-img.aa,
	// NAME.ntfs-img.aa). split's suffixes run through "gz" and "xz":
	// after those stems they are volumes, else compressors' suffixes.
	stem = base[:i]
	j := strings.LastIndexByte(stem, '.')
	_, stemComp := compressors[stem[j+1:]]
	afterComp := j >= 0 && stemComp
	rawImage := strings.HasSuffix(stem, ".dd-img") || strings.HasSuffix(stem, ".ntfs-img")
	if _, isComp := compressors[suf]; isComp && !afterComp && !rawImage {
		return "", "", false
	}
	if suf != strings.Repeat("a", len(suf)) && !afterComp && !rawImage {
		return "", "", false
	}
	return stem, suf, true
}

// Stream is the concatenated volumes of an image, read in order.
type Stream struct {
	paths []string
	i     int
	f     *os.File
	pos   int64 // bytes read of all volumes
	size  int64
	atEnd bool // the last volume was read to its end
}

// OpenVolumes opens the volumes of an image (Volumes' list) as one
// stream. Each is opened without following a symlink planted in its
// place. A volume that cannot be opened is named in the error.
func OpenVolumes(paths []string) (*Stream, error) {
	s := &Stream{paths: paths}
	for _, p := range paths {
		st, err := os.Lstat(p)
		if err != nil {
			return nil, fmt.Errorf("partclone: %w", err)
		}
		if !st.Mode().IsRegular() {
			return nil, fmt.Errorf("partclone: volume %s is not a regular file", p)
		}
		s.size += st.Size()
	}
	return s, nil
}

// Size is the bytes of all volumes.
func (s *Stream) Size() int64 { return s.size }

// Volume is the volume being read, and the stream offset it starts at.
func (s *Stream) Volume() string {
	if s.i < len(s.paths) {
		return s.paths[s.i]
	}
	return s.paths[len(s.paths)-1]
}

func (s *Stream) Read(p []byte) (int, error) {
	for s.i < len(s.paths) {
		if s.f == nil {
			f, err := openNoFollow(s.paths[s.i])
			if err != nil {
				return 0, fmt.Errorf("partclone: open volume: %w", err)
			}
			s.f = f
		}
		n, err := s.f.Read(p)
		s.pos += int64(n)
		if err == io.EOF {
			s.f.Close()
			s.f = nil
			s.i++
			s.atEnd = s.i == len(s.paths)
			if n > 0 {
				return n, nil
			}
			continue
		}
		if err != nil {
			return n, fmt.Errorf("partclone: read %s: %w", s.paths[s.i], err)
		}
		return n, nil
	}
	return 0, io.EOF
}

// Close closes the volume being read.
func (s *Stream) Close() error {
	if s.f != nil {
		err := s.f.Close()
		s.f = nil
		return err
	}
	return nil
}

func openNoFollow(p string) (*os.File, error) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: p, Err: err}
	}
	return os.NewFile(uintptr(fd), p), nil
}

// compressors are the suffixes Clonezilla gives images (ocs-sr -z0 to
// -z9), with the decompressor of each this package has; nil for the
// ones it refuses.
var compressors = map[string]func(io.Reader) (io.ReadCloser, error){
	"gz": func(r io.Reader) (io.ReadCloser, error) {
		z, err := gzip.NewReader(r)
		if err != nil {
			return nil, err
		}
		return z, nil
	},
	"zst": func(r io.Reader) (io.ReadCloser, error) {
		// A window of at most 256 MiB: zstd -19 uses 8 MiB, --long 128 MiB.
		z, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(256<<20))
		if err != nil {
			return nil, err
		}
		return z.IOReadCloser(), nil
	},
	"xz": func(r io.Reader) (io.ReadCloser, error) {
		// The dictionary is the size the stream declares (xz -9: 64 MiB).
		z, err := xz.NewReader(r)
		if err != nil {
			return nil, err
		}
		return io.NopCloser(z), nil
	},
	"bz2": func(r io.Reader) (io.ReadCloser, error) { return io.NopCloser(bzip2.NewReader(r)), nil },
	"lz4": func(r io.Reader) (io.ReadCloser, error) { return io.NopCloser(lz4.NewReader(r)), nil },
	"uncomp": func(r io.Reader) (io.ReadCloser, error) {
		return io.NopCloser(r), nil
	},
	"lzo":  nil,
	"lzma": nil,
	"lzip": nil,
	"lrz":  nil,
}

// Compression is the compressor an image's name says it was written
// with (Clonezilla's suffix: gz, zst, xz, bz2, lz4, uncomp, or lzo,
// lzma, lzip, lrz, which are not read), or "" when the name says none.
func Compression(name string) string {
	base := filepath.Base(name)
	if stem, _, ok := volumeSuffix(base); ok {
		base = stem
	}
	i := strings.LastIndexByte(base, '.')
	if i < 0 {
		return ""
	}
	if _, ok := compressors[base[i+1:]]; ok {
		return base[i+1:]
	}
	return ""
}

// ErrUnsupportedCompression is an image compressed with a program this
// build cannot decompress.
var ErrUnsupportedCompression = errors.New("compression not supported")

// Decompress wraps r in the decompressor comp names (Compression's
// answer; "" and "uncomp": none).
func Decompress(comp string, r io.Reader) (io.ReadCloser, error) {
	if comp == "" {
		return io.NopCloser(r), nil
	}
	open, ok := compressors[comp]
	if !ok || open == nil {
		return nil, fmt.Errorf("partclone: %w: %s (readable: gz, zst, xz, bz2, lz4, uncomp; decompress it with its own tool first)", ErrUnsupportedCompression, comp)
	}
	rc, err := open(r)
	if err != nil {
		return nil, fmt.Errorf("partclone: %s stream: %w", comp, err)
	}
	return rc, nil
}

// OpenFile opens the image whose first volume (or only file) is path,
// following its split volumes and decompressing by its name's suffix,
// and reads its header and bitmap. The caller closes the returned
// closer after the Reader is done.
func OpenFile(path string) (*Reader, io.Closer, error) {
	paths, err := Volumes(path)
	if err != nil {
		return nil, nil, err
	}
	s, err := OpenVolumes(paths)
	if err != nil {
		return nil, nil, err
	}
	comp := Compression(path)
	dec, err := Decompress(comp, s)
	if err != nil {
		return nil, nil, err
	}
	size := int64(-1)
	if comp == "" || comp == "uncomp" {
		size = s.Size()
	}
	closer := closers{dec, s}
	r, err := NewReader(dec, size)
	if err != nil {
		closer.Close()
		return nil, nil, inVolumes(err, paths, s)
	}
	r.volumes, r.stream = paths, s
	return r, closer, nil
}

type closers []io.Closer

func (c closers) Close() error {
	var err error
	for _, x := range c {
		err = errors.Join(err, x.Close())
	}
	return err
}

// inVolumes adds to an error of an image that ends early, when it is
// split, the volume that would come next: the one missing. An image
// ends early when its bytes run out (an uncompressed one) or when its
// decompressor fails after the last volume was read to its end.
func inVolumes(err error, paths []string, s *Stream) error {
	var fe *FormatError
	var ce *ChecksumError
	cut := errors.As(err, &fe) && fe.Err != nil && errors.Is(fe.Err, io.ErrUnexpectedEOF)
	if errors.As(err, &ce) || !cut && !s.atEnd {
		return err
	}
	last := paths[len(paths)-1]
	if next := NextVolume(last); next != "" {
		return fmt.Errorf("%w (%s is the last volume there is; %w: %s?)", err, filepath.Base(last), ErrMissingVolume, filepath.Base(next))
	}
	return err
}

// Files is the volumes of a split uncompressed image read at random as
// the one image they hold. ReadAt is safe for parallel calls.
type Files struct {
	files []*os.File
	ends  []int64 // the stream offset after each volume
}

// OpenFiles opens the volumes (Volumes' list) of an uncompressed image,
// without following a symlink planted in the place of any.
func OpenFiles(paths []string) (*Files, error) {
	fs := &Files{}
	var end int64
	for _, p := range paths {
		f, err := openNoFollow(p)
		if err != nil {
			fs.Close()
			return nil, fmt.Errorf("partclone: open volume: %w", err)
		}
		fs.files = append(fs.files, f)
		st, err := f.Stat()
		if err == nil && !st.Mode().IsRegular() {
			err = fmt.Errorf("volume %s is not a regular file", p)
		}
		if err != nil {
			fs.Close()
			return nil, fmt.Errorf("partclone: %w", err)
		}
		end += st.Size()
		fs.ends = append(fs.ends, end)
	}
	return fs, nil
}

// Size is the bytes of all volumes.
func (fs *Files) Size() int64 {
	if len(fs.ends) == 0 {
		return 0
	}
	return fs.ends[len(fs.ends)-1]
}

// ReadAt reads the image's bytes [off, off+len(p)) across volumes.
func (fs *Files) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("partclone: negative offset %d", off)
	}
	n := 0
	i := sort.Search(len(fs.ends), func(i int) bool { return fs.ends[i] > off })
	for n < len(p) && i < len(fs.files) {
		start := int64(0)
		if i > 0 {
			start = fs.ends[i-1]
		}
		want := min(int64(len(p)-n), fs.ends[i]-off)
		k, err := fs.files[i].ReadAt(p[n:n+int(want)], off-start)
		n += k
		off += int64(k)
		if err != nil && !(err == io.EOF && int64(k) == want) {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF // the volume shrank under us
			}
			return n, fmt.Errorf("partclone: read %s: %w", fs.files[i].Name(), err)
		}
		i++
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Close closes the volumes.
func (fs *Files) Close() error {
	var err error
	for _, f := range fs.files {
		err = errors.Join(err, f.Close())
	}
	return err
}

// Sniff finds a stream's compression by its first bytes, for the images
// ocs-sr names without it (NAME.dd-img.aa, NAME.ntfs-img.aa): gz, zst,
// xz, bz2, lz4 or "" (none). The returned reader gives r's bytes from
// the first.
func Sniff(r io.Reader) (string, io.Reader, error) {
	head := make([]byte, 6)
	n, err := io.ReadFull(r, head)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return "", nil, err
	}
	head = head[:n]
	comp := ""
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		comp = "gz"
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		comp = "zst"
	case bytes.HasPrefix(head, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		comp = "xz"
	case bytes.HasPrefix(head, []byte("BZh")):
		comp = "bz2"
	case bytes.HasPrefix(head, []byte{0x04, 0x22, 0x4d, 0x18}):
		comp = "lz4"
	}
	return comp, io.MultiReader(bytes.NewReader(head), r), nil
}
