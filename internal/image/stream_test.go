package image

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"github.com/platter-dev/platter/internal/seal"
	"github.com/zeebo/blake3"
)

// readStream reads a whole image as a stream: the frames it yields (by
// offset, their decoded bytes), the Reader of its end, and the damage
// Check finds. A frame error is returned as err after the stream ends.
func readStream(t testing.TB, b []byte, keys Keyring) (map[int64][]byte, *Reader, []*ChunkError, error) {
	s, err := NewStream(bytes.NewReader(b), keys)
	if err != nil {
		return nil, nil, nil, err
	}
	frames := map[int64][]byte{}
	var frameErr error
	for {
		f, err := s.Next(nil)
		if err == io.EOF {
			break
		}
		var ce *ChunkError
		if errors.As(err, &ce) {
			frameErr = err
			continue
		}
		if err != nil {
			return frames, nil, nil, err
		}
		if blake3.Sum256(f.Data) != f.Hash {
			t.Fatalf("frame at %d: data does not match its hash", f.Off)
		}
		frames[f.Off] = bytes.Clone(f.Data)
	}
	r, err := s.Finish()
	if err != nil {
		return frames, nil, nil, err
	}
	return frames, r, s.Check(r), frameErr
}

// A streamed image gives the frames, index, maps and metadata a Reader of
// the same bytes gives.
func TestStreamMatchesReader(t *testing.T) {
	for _, tc := range []struct {
		name string
		img  func(testing.TB) ([]byte, [][]byte)
	}{{"plain", sampleImage}, {"sealed", sealedSample}} {
		t.Run(tc.name, func(t *testing.T) {
			img, chunks := tc.img(t)
			want, err := Open(bytes.NewReader(img), int64(len(img)), secrets("correct horse"))
			if err != nil {
				t.Fatal(err)
			}
			frames, r, bad, err := readStream(t, img, secrets("correct horse"))
			if err != nil || len(bad) > 0 {
				t.Fatalf("stream: %v %v", err, bad)
			}
			defer r.Close()
			if len(frames) != 2 {
				t.Fatalf("%d frames, want 2", len(frames))
			}
			if r.Digest() != want.Digest() || r.Size() != int64(len(img)) || len(r.Entries()) != len(want.Entries()) {
				t.Fatalf("stream reader differs: digest %x/%x size %d/%d", r.Digest(), want.Digest(), r.Size(), len(img))
			}
			for i, e := range r.Entries() {
				if e != want.Entries()[i] {
					t.Fatalf("entry %d: %+v, want %+v", i, e, want.Entries()[i])
				}
				if !e.Zero() && !bytes.Equal(frames[e.FrameOff], chunks[i]) {
					t.Fatalf("chunk %d: the frame at %d holds other bytes", i, e.FrameOff)
				}
			}
			if r.Metadata().ID != want.Metadata().ID || r.Map(0) == nil {
				t.Fatal("metadata or map missing")
			}
			// Frames that were not kept do not read, and say so.
			if _, err := r.ReadChunk(r.Entries()[0], nil); !errors.Is(err, ErrNotKept) {
				t.Fatalf("ReadChunk of a frame not kept: %v", err)
			}
		})
	}
}

// Kept frames read through the Reader like a file's.
func TestStreamKeep(t *testing.T) {
	img, chunks := sealedSample(t)
	s, err := NewStream(bytes.NewReader(img), secrets("correct horse"))
	if err != nil {
		t.Fatal(err)
	}
	s.Keep = func(area uint32, chunk uint64) bool { return chunk == 0 }
	for {
		if _, err := s.Next(nil); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	r, err := s.Finish()
	if err != nil {
		t.Fatal(err)
	}
	got, err := r.ReadChunk(r.Entries()[0], nil)
	if err != nil || !bytes.Equal(got, chunks[0]) {
		t.Fatalf("kept chunk: %v", err)
	}
}

// A stream cut anywhere says where it ends, as damage; never a Reader.
func TestStreamCut(t *testing.T) {
	for _, tc := range []struct {
		name string
		img  func(testing.TB) ([]byte, [][]byte)
	}{{"plain", sampleImage}, {"sealed", sealedSample}} {
		img, _ := tc.img(t)
		for n := 0; n < len(img); n++ {
			_, r, _, err := readStream(t, img[:n], secrets("correct horse"))
			if r != nil || err == nil {
				t.Fatalf("%s: cut at %d opens", tc.name, n)
			}
			var se *StreamEndError
			if n >= 8 && (!errors.As(err, &se) || se.Off != int64(n)) {
				t.Fatalf("%s: cut at %d: %v", tc.name, n, err)
			}
			if !errors.Is(err, ErrDamaged) {
				t.Fatalf("%s: cut at %d: not damage: %v", tc.name, n, err)
			}
		}
	}
}

// Every single-bit flip is found: by a frame's checks, by Finish (the
// checks Open makes) or by Check; nothing passes.
func TestStreamBitFlips(t *testing.T) {
	for _, tc := range []struct {
		name string
		img  func(testing.TB) ([]byte, [][]byte)
	}{{"plain", sampleImage}, {"sealed", sealedSample}} {
		img, _ := tc.img(t)
		ring := secrets("correct horse") // one key derivation for all
		step := 1
		if len(img) > 4000 {
			step = 7 // the slots are 32 KiB of mostly padding
		}
		for i := 0; i < len(img); i += step {
			for _, bit := range []byte{1, 0x80} {
				b := bytes.Clone(img)
				b[i] ^= bit
				_, r, bad, err := readStream(t, b, ring)
				if err == nil && len(bad) == 0 {
					// Only what the format leaves unchecked may pass (a
					// damaged copy of the key slots; a plain frame
					// header's chunk number, which only names the first
					// chunk that had the frame): the file reader must
					// take the same bytes and verify them clean.
					r.Close()
					fr, ferr := Open(bytes.NewReader(b), int64(len(b)), ring)
					if ferr != nil {
						t.Fatalf("%s: flip at byte %d passes the stream but not the file reader: %v", tc.name, i, ferr)
					}
					if fbad, _ := fr.Verify(context.Background(), 1, nil); len(fbad) > 0 {
						t.Fatalf("%s: flip at byte %d (bit %#x) passes the stream, the file reader finds %v", tc.name, i, bit, fbad[0])
					}
					continue
				}
				if err != nil && !errors.Is(err, ErrDamaged) {
					t.Fatalf("%s: flip at %d: not damage: %v", tc.name, i, err)
				}
			}
		}
	}
}

// Lengths read from a hostile stream are bounded before anything is
// allocated: a frame or block that claims gigabytes is refused at once.
func TestStreamHostileLengths(t *testing.T) {
	img, _ := sampleImage(t)
	s, err := NewStream(bytes.NewReader(img), nil)
	if err != nil {
		t.Fatal(err)
	}
	first := s.Offset() // the first frame
	// A frame that claims 4 GiB of payload.
	b := bytes.Clone(img)
	binary.LittleEndian.PutUint32(b[first+24:], 0xffffffff)
	if _, _, _, err := readStream(t, b, nil); err == nil || !errors.Is(err, ErrDamaged) {
		t.Fatalf("huge frame: %v", err)
	}
	// A layout block that claims an exabyte.
	b = bytes.Clone(img)
	binary.LittleEndian.PutUint64(b[headerSize+16:], 1<<60)
	if _, _, _, err := readStream(t, b, nil); err == nil || !errors.Is(err, ErrDamaged) {
		t.Fatalf("huge layout: %v", err)
	}
	// Trailing bytes after the footer.
	b = append(bytes.Clone(img), 0)
	if _, _, _, err := readStream(t, b, nil); err == nil || !errors.Is(err, ErrDamaged) {
		t.Fatalf("trailing byte: %v", err)
	}
	// A wrong passphrase is not damage.
	sealed, _ := sealedSample(t)
	if _, err := NewStream(bytes.NewReader(sealed), secrets("wrong")); !errors.Is(err, seal.ErrWrongPassphrase) {
		t.Fatalf("wrong passphrase: %v", err)
	}
}

func FuzzStream(f *testing.F) {
	img, _ := sampleImage(f)
	f.Add(img)
	f.Add(img[:len(img)-1])
	sealed, _ := sealedSample(f)
	f.Add(sealed)
	f.Fuzz(func(t *testing.T, b []byte) {
		_, r, _, err := readStream(t, b, secrets("correct horse"))
		if err != nil {
			if !errors.Is(err, ErrDamaged) && !errors.Is(err, seal.ErrWrongPassphrase) {
				t.Fatalf("error does not say damaged: %v", err)
			}
			return
		}
		r.Close()
	})
}
