package lvm

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// LVM2 keeps a volume group's layout as text in its own config syntax
// (libdevmapper's dm_config): sections `name { ... }`, assignments
// `key = value`, values that are quoted strings, integers, floats or
// one-level lists `[v, v]`, and `#` comments to the end of the line.
// This is a small parser for it. The text comes off the disk, so
// everything it builds is bounded by the text itself and by the limits
// below, and anything LVM would not have written (a bare word value, a
// number with a leading zero, which libdm would read as octal, a key
// given twice) is refused rather than guessed at.
const (
	// maxText bounds the metadata text read (LVM's default metadata
	// area is 1 MiB; a VG with thousands of LVs needs a few MiB).
	maxText = 16 << 20
	// maxNodes bounds the entries and list items of one text (each
	// costs some 200 bytes parsed): an LV with one segment has about
	// 25, so this is room for some ten thousand LVs. A larger text is
	// refused, and its PV copied whole.
	maxNodes = 1 << 18
	// maxNesting bounds sections inside sections (LVM writes 5 levels).
	maxNesting = 16
)

type valueKind uint8

const (
	kindString valueKind = iota + 1
	kindInt
	kindFloat // kept as its text: nothing Platter reads is a float
	kindList
)

// value is one value of an assignment or one item of a list.
type value struct {
	kind valueKind
	off  int // where it starts in the text
	str  string
	num  int64
	list []value
}

// item is one entry of a section: a subsection or an assignment.
type item struct {
	name string
	off  int
	sec  *section
	val  *value
}

// section is a `name { ... }` block (the whole text is an unnamed one).
type section struct {
	name  string
	off   int
	items []item
	index map[string]int
}

// syntaxError is a place the text is not LVM's config syntax.
type syntaxError struct {
	off int
	msg string
}

func (e *syntaxError) Error() string {
	return fmt.Sprintf("%s at character %d of the metadata text", e.msg, e.off)
}

// parseConfig parses LVM2 metadata text. The text ends at its first NUL
// byte (LVM writes one after it) or at its end.
func parseConfig(b []byte) (*section, error) {
	if len(b) > maxText {
		return nil, &syntaxError{0, fmt.Sprintf("metadata text of %d bytes is larger than %d", len(b), maxText)}
	}
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	p := &parser{b: b}
	root := &section{index: map[string]int{}}
	if err := p.items(root, 0); err != nil {
		return nil, err
	}
	return root, nil
}

type parser struct {
	b     []byte
	i     int
	nodes int
}

func (p *parser) fail(off int, format string, args ...any) error {
	return &syntaxError{off, fmt.Sprintf(format, args...)}
}

// skip passes white space and comments.
func (p *parser) skip() {
	for p.i < len(p.b) {
		switch c := p.b[p.i]; {
		case c == '#':
			for p.i < len(p.b) && p.b[p.i] != '\n' {
				p.i++
			}
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f':
			p.i++
		default:
			return
		}
	}
}

// delim reports whether c ends a word (a name or a number).
func delim(c byte) bool {
	switch c {
	case ' ', '\t', '\n', '\r', '\v', '\f', '#', '=', '{', '}', '[', ']', ',', '"':
		return true
	}
	return false
}

func (p *parser) word() string {
	s := p.i
	for p.i < len(p.b) && !delim(p.b[p.i]) {
		p.i++
	}
	return string(p.b[s:p.i])
}

func (p *parser) count(off int) error {
	p.nodes++
	if p.nodes > maxNodes {
		return p.fail(off, "more than %d entries", maxNodes)
	}
	return nil
}

// items reads the entries of s up to its closing brace (depth > 0) or
// the end of the text (depth 0).
func (p *parser) items(s *section, depth int) error {
	for {
		p.skip()
		if p.i >= len(p.b) {
			if depth > 0 {
				return p.fail(s.off, "section %q is not closed", s.name)
			}
			return nil
		}
		if p.b[p.i] == '}' {
			if depth == 0 {
				return p.fail(p.i, "'}' outside any section")
			}
			p.i++
			return nil
		}
		off := p.i
		name := p.word()
		if name == "" {
			return p.fail(off, "unexpected %q", p.b[off])
		}
		if err := p.count(off); err != nil {
			return err
		}
		if _, dup := s.index[name]; dup {
			return p.fail(off, "%q given twice in section %q", name, s.name)
		}
		p.skip()
		if p.i >= len(p.b) {
			return p.fail(off, "%q has no value", name)
		}
		switch p.b[p.i] {
		case '{':
			if depth+1 > maxNesting {
				return p.fail(off, "sections nested more than %d deep", maxNesting)
			}
			p.i++
			sub := &section{name: name, off: off, index: map[string]int{}}
			if err := p.items(sub, depth+1); err != nil {
				return err
			}
			s.index[name] = len(s.items)
			s.items = append(s.items, item{name: name, off: off, sec: sub})
		case '=':
			p.i++
			p.skip()
			v, err := p.value(true)
			if err != nil {
				return err
			}
			s.index[name] = len(s.items)
			s.items = append(s.items, item{name: name, off: off, val: &v})
		default:
			return p.fail(p.i, "expected '{' or '=' after %q", name)
		}
	}
}

// value reads a string, a number or (when lists) a list of them.
func (p *parser) value(lists bool) (value, error) {
	off := p.i
	if p.i >= len(p.b) {
		return value{}, p.fail(off, "missing value")
	}
	switch c := p.b[p.i]; {
	case c == '"':
		s, err := p.quoted()
		return value{kind: kindString, off: off, str: s}, err
	case c == '[':
		if !lists {
			return value{}, p.fail(off, "list inside a list")
		}
		p.i++
		v := value{kind: kindList, off: off}
		p.skip()
		if p.i < len(p.b) && p.b[p.i] == ']' {
			p.i++
			return v, nil
		}
		for {
			p.skip()
			if err := p.count(p.i); err != nil {
				return value{}, err
			}
			e, err := p.value(false)
			if err != nil {
				return value{}, err
			}
			v.list = append(v.list, e)
			p.skip()
			if p.i >= len(p.b) {
				return value{}, p.fail(off, "list is not closed")
			}
			switch p.b[p.i] {
			case ',':
				p.i++
			case ']':
				p.i++
				return v, nil
			default:
				return value{}, p.fail(p.i, "expected ',' or ']' in a list")
			}
		}
	case c == '-' || c >= '0' && c <= '9':
		w := p.word()
		return number(w, off)
	}
	return value{}, p.fail(off, "a value must be a quoted string, a number or a list")
}

// number reads an integer or a float as LVM writes them: decimal, no
// leading zeros, no exponent.
func number(w string, off int) (value, error) {
	digits := strings.TrimPrefix(w, "-")
	intPart, frac, isFloat := strings.Cut(digits, ".")
	okDigits := func(s string) bool {
		if s == "" {
			return false
		}
		for i := 0; i < len(s); i++ {
			if s[i] < '0' || s[i] > '9' {
				return false
			}
		}
		return true
	}
	if !okDigits(intPart) || isFloat && !okDigits(frac) || len(intPart) > 1 && intPart[0] == '0' {
		return value{}, &syntaxError{off, fmt.Sprintf("bad number %q", w)}
	}
	if isFloat {
		return value{kind: kindFloat, off: off, str: w}, nil
	}
	n, err := strconv.ParseInt(w, 10, 64)
	if err != nil {
		return value{}, &syntaxError{off, fmt.Sprintf("number %q out of range", w)}
	}
	return value{kind: kindInt, off: off, num: n}, nil
}

// quoted reads a "..." string; a backslash takes the next byte as it is.
func (p *parser) quoted() (string, error) {
	off := p.i
	p.i++
	s := p.i
	var sb *strings.Builder
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case '"':
			out := string(p.b[s:p.i])
			if sb != nil {
				sb.Write(p.b[s:p.i])
				out = sb.String()
			}
			p.i++
			return out, nil
		case '\\':
			if sb == nil {
				sb = &strings.Builder{}
			}
			sb.Write(p.b[s:p.i])
			p.i++
			if p.i >= len(p.b) {
				return "", p.fail(off, "string is not closed")
			}
			sb.WriteByte(p.b[p.i])
			p.i++
			s = p.i
		default:
			p.i++
		}
	}
	return "", p.fail(off, "string is not closed")
}

// sub is the subsection name of s, or nil.
func (s *section) sub(name string) *section {
	if i, ok := s.index[name]; ok {
		return s.items[i].sec
	}
	return nil
}

// val is the value assigned to name in s, or nil.
func (s *section) val(name string) *value {
	if i, ok := s.index[name]; ok {
		return s.items[i].val
	}
	return nil
}

// sections are the subsections of s, in the text's order.
func (s *section) sections() []*section {
	var out []*section
	for _, it := range s.items {
		if it.sec != nil {
			out = append(out, it.sec)
		}
	}
	return out
}
