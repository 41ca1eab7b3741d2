package codec

import (
	"bytes"
	"errors"
	"math/rand"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// decodeSeeds are zstd frames as both encoders write them, with the
// chunk lengths they decode to, and damaged and odd variants.
func decodeSeeds(t testing.TB) [][]byte {
	enc, err := NewEncoder(Setting{ID: Zstd, Level: 3}, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	goEnc, err := zstd.NewWriter(nil, zstd.WithEncoderCRC(true))
	if err != nil {
		t.Fatal(err)
	}
	defer goEnc.Close()
	rng := rand.New(rand.NewSource(7))
	mixed := make([]byte, 200000)
	rng.Read(mixed[:50000])
	copy(mixed[100000:], bytes.Repeat([]byte("used blocks only "), 5000))
	var seeds [][]byte
	for _, data := range [][]byte{mixed, bytes.Repeat([]byte{0}, 70000), []byte("x"), {}} {
		if _, c := enc.Encode(nil, data); len(data) > 0 {
			seeds = append(seeds, c)
		}
		g := goEnc.EncodeAll(data, nil)
		seeds = append(seeds, g, append(g[:len(g):len(g)], g...)) // one frame, two frames
		bad := bytes.Clone(g)
		bad[len(bad)/2] ^= 0x20
		seeds = append(seeds, bad, g[:len(g)-1])
	}
	return seeds
}

// checkDecoders holds the binary's chunk decoder to the pure-Go one: it
// never returns more than the buffer holds, and every frame the pure-Go
// decoder decodes to a whole chunk (size bytes, as Decode requires) it
// decodes to the same bytes, so an image the pure-Go build reads, the
// default build reads the same. Degenerate frames that decode to no
// bytes may differ (the pure-Go decoder takes a frame header claiming
// no content without its block; libzstd does not): no chunk is empty.
func checkDecoders(t *testing.T, d *chunkDecoder, g *zstd.Decoder, src []byte, size int) {
	got, err := d.decode(make([]byte, 0, size), src)
	if err == nil && len(got) > size {
		t.Fatalf("decoded %d bytes into a buffer of %d", len(got), size)
	}
	want, gerr := g.DecodeAll(src, make([]byte, 0, size))
	if gerr != nil || size == 0 || len(want) != size {
		return
	}
	if err != nil {
		t.Fatalf("pure-Go decoder decodes %d bytes, %s fails: %v", len(want), DecoderName, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s decodes %d bytes, pure Go %d: they differ", DecoderName, len(got), len(want))
	}
}

func TestDecodersAgree(t *testing.T) {
	d, err := newChunkDecoder(1)
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	g, err := newGoDecoder(1)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	seeds := decodeSeeds(t)
	for _, src := range seeds {
		for _, size := range []int{0, 1, 4096, 70000, 199999, 200000, 400000} {
			checkDecoders(t, d, g, src, size)
		}
	}
	// Through Decode: empty input and a frame too long for the chunk are
	// damage, never a panic.
	dec, err := NewDecoder(1)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	if _, err := dec.Decode(Zstd, make([]byte, 0, 10), nil); !errors.Is(err, ErrCorrupt) {
		t.Errorf("empty frame: %v, want ErrCorrupt", err)
	}
	if _, err := dec.Decode(Zstd, make([]byte, 0, 100), seeds[0]); !errors.Is(err, ErrCorrupt) {
		t.Errorf("frame longer than the chunk: %v, want ErrCorrupt", err)
	}
	if _, err := dec.Decode(Zstd, nil, seeds[0]); !errors.Is(err, ErrCorrupt) {
		t.Errorf("frame into an empty chunk: %v, want ErrCorrupt", err)
	}
}

func FuzzDecode(f *testing.F) {
	for _, s := range decodeSeeds(f) {
		f.Add(s, uint32(200000))
		f.Add(s, uint32(70000))
	}
	d, err := newChunkDecoder(1)
	if err != nil {
		f.Fatal(err)
	}
	g, err := newGoDecoder(1)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, src []byte, size uint32) {
		checkDecoders(t, d, g, src, int(size%(1<<20)))
	})
}
