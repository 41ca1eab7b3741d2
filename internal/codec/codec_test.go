package codec

import (
	"bytes"
	"errors"
	"math/rand"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	enc, err := NewEncoder(Setting{ID: Zstd, Level: 3}, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	dec, err := NewDecoder(2)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	random := make([]byte, 1<<20)
	rand.New(rand.NewSource(1)).Read(random)
	text := bytes.Repeat([]byte("platter images disks "), 50000)
	for _, tc := range []struct {
		name string
		data []byte
		want ID
	}{{"text", text, Zstd}, {"random", random, None}} {
		id, stored := enc.Encode(nil, tc.data)
		if id != tc.want {
			t.Errorf("%s: codec %v, want %v", tc.name, id, tc.want)
		}
		got, err := dec.Decode(id, make([]byte, 0, len(tc.data)), stored)
		if err != nil || !bytes.Equal(got, tc.data) {
			t.Fatalf("%s: round trip failed: %v", tc.name, err)
		}
		if _, err := dec.Decode(id, make([]byte, 0, len(tc.data)+1), stored); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: wrong length accepted: %v", tc.name, err)
		}
	}
	_, stored := enc.Encode(nil, text)
	stored[len(stored)/2] ^= 0xff
	if _, err := dec.Decode(Zstd, make([]byte, 0, len(text)), stored); err == nil {
		// zstd without its own checksum may decode damaged literals; the
		// BLAKE3 hash in the frame catches that. A length error is fine too.
		t.Log("damaged zstd decoded without error; the chunk hash must catch it")
	}
}

func TestParseSetting(t *testing.T) {
	for in, want := range map[string]string{"none": "none", "fast": "zstd:1", "zstd": DefaultSetting.String(), "zstd:1": "zstd:1", "zstd:19": "zstd:19"} {
		s, err := ParseSetting(in)
		if err != nil || s.String() != want {
			t.Errorf("ParseSetting(%q) = %v, %v; want %s", in, s, err, want)
		}
	}
	for _, bad := range []string{"", "gzip", "zstd:0", "zstd:23", "zstd:x", "none:1", "fast:2"} {
		if _, err := ParseSetting(bad); err == nil {
			t.Errorf("ParseSetting(%q) accepted", bad)
		}
	}
}
