package clonezilla

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"

	"github.com/platter-dev/platter/internal/ptable"
)

// sfPart is one partition line of an sfdisk dump.
type sfPart struct {
	Dev   string // the device as sfdisk named it: /dev/sda1
	Index int
	ptable.Partition
	Extended bool
}

// sfDump is an `sfdisk -d` dump: <disk>-pt.sf.
type sfDump struct {
	Label      string // "gpt" or "dos"
	ID         string
	SectorSize int64
	FirstLBA   int64
	LastLBA    int64
	Parts      []sfPart
}

// parseSfdisk parses an sfdisk dump; name is the file's, for errors.
func parseSfdisk(b []byte, name string) (*sfDump, error) {
	d := &sfDump{SectorSize: 512}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 4096), 64<<10)
	line := 0
	bad := func(msg string, args ...any) error {
		return fmt.Errorf("clonezilla: %s line %d: %s", name, line, fmt.Sprintf(msg, args...))
	}
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		if dev, rest, ok := strings.Cut(s, " : "); ok {
			p, err := parsePartLine(strings.TrimSpace(dev), rest, d.SectorSize)
			if err != nil {
				return nil, bad("%v", err)
			}
			d.Parts = append(d.Parts, p)
			continue
		}
		k, v, ok := strings.Cut(s, ":")
		if !ok {
			return nil, bad("%q is neither a header nor a partition", s)
		}
		v = strings.TrimSpace(v)
		var err error
		switch k {
		case "label":
			d.Label = v
		case "label-id":
			d.ID = v
		case "sector-size":
			d.SectorSize, err = strconv.ParseInt(v, 10, 64)
			if err == nil && (d.SectorSize < 512 || d.SectorSize > 64<<10 || d.SectorSize&(d.SectorSize-1) != 0) {
				err = fmt.Errorf("sector size %d", d.SectorSize)
			}
		case "first-lba":
			d.FirstLBA, err = strconv.ParseInt(v, 10, 64)
		case "last-lba":
			d.LastLBA, err = strconv.ParseInt(v, 10, 64)
		}
		if err != nil {
			return nil, bad("%s: %v", k, err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("clonezilla: %s: %w", name, err)
	}
	if d.Label != "gpt" && d.Label != "dos" {
		return nil, fmt.Errorf("clonezilla: %s: partition table label %q (gpt or dos expected)", name, d.Label)
	}
	// Sectors became bytes at the sector size in force on each line; the
	// sector-size line comes before the partitions in every sfdisk dump.
	return d, nil
}

func parsePartLine(dev, rest string, ss int64) (sfPart, error) {
	p := sfPart{Dev: dev}
	i := len(dev)
	for i > 0 && dev[i-1] >= '0' && dev[i-1] <= '9' {
		i--
	}
	n, err := strconv.Atoi(dev[i:])
	if err != nil || n <= 0 || n > 256 {
		return p, fmt.Errorf("no partition number in %q", dev)
	}
	p.Index, p.Partition.Index = n, n
	for _, f := range splitFields(rest) {
		k, v, _ := strings.Cut(f, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch k {
		case "start", "size":
			x, err := strconv.ParseInt(v, 10, 64)
			if err != nil || x < 0 || x > (1<<62)/ss {
				return p, fmt.Errorf("%s=%q", k, v)
			}
			if k == "start" {
				p.Start = x * ss
			} else {
				p.Size = x * ss
			}
		case "type", "Id":
			if len(v) <= 2 {
				t, err := strconv.ParseUint(v, 16, 8)
				if err != nil {
					return p, fmt.Errorf("type=%q", v)
				}
				p.Type = fmt.Sprintf("0x%02x", t)
				p.Extended = t == 0x05 || t == 0x0f || t == 0x85
			} else {
				p.Type = strings.ToUpper(v)
			}
		case "uuid":
			p.GUID = strings.ToUpper(v)
		case "name":
			p.Name = unquote(v)
		case "attrs":
			p.Attrs = parseAttrs(unquote(v))
		case "bootable":
			p.Bootable = true
		}
	}
	return p, nil
}

// splitFields splits on commas outside double quotes.
func splitFields(s string) []string {
	var out []string
	q := false
	start := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '"':
			q = !q
		case '\\':
			i++
		case ',':
			if !q {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	return append(out, s[start:])
}

// unquote undoes sfdisk's quoting: "..." with \xHH escapes.
func unquote(s string) string {
	s = strings.TrimSuffix(strings.TrimPrefix(s, `"`), `"`)
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && s[i+1] == 'x' {
			if v, err := strconv.ParseUint(s[i+2:i+4], 16, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// parseAttrs reads sfdisk's GPT attribute words.
func parseAttrs(s string) uint64 {
	var a uint64
	for _, w := range strings.Fields(s) {
		switch {
		case w == "RequiredPartition" || w == "RequiredPartiton":
			a |= 1
		case w == "NoBlockIOProtocol":
			a |= 2
		case w == "LegacyBIOSBootable":
			a |= 4
		case strings.HasPrefix(w, "GUID:"):
			for _, n := range strings.Split(w[5:], ",") {
				if b, err := strconv.Atoi(n); err == nil && b >= 0 && b < 64 {
					a |= 1 << uint(b)
				}
			}
		}
	}
	return a
}
