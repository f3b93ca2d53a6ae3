package config

import (
	"strconv"
	"strings"
)

// lineIndex maps a dotted key with array indexes ("sinks.1.kafka.spool.dir",
// "paths.2") to the line where it first appears, for error messages.
//
// It decides nothing: the TOML decoder alone judges syntax and decides
// which keys were set; this only finds lines, because BurntSushi/toml
// keeps key positions private (and keys of an array of tables share one
// position there). It runs only on documents the decoder accepted, and
// on anything else finds fewer lines but never fails.
type lineIndex map[string]int

// line finds key's line, or else its nearest parent's; 0 if none.
func (l lineIndex) line(key string) int {
	for key != "" {
		if n, ok := l[key]; ok {
			return n
		}
		i := strings.LastIndexByte(key, '.')
		if i < 0 {
			break
		}
		key = key[:i]
	}
	return 0
}

// MaxNesting bounds how deeply arrays and inline tables may nest. The
// decoder's time grows with the square of the depth (100000 levels took
// minutes), so Parse refuses deeper documents before decoding them; no
// config needs more than a few levels.
const MaxNesting = 64

// maxElementLines bounds the array elements whose lines are recorded.
const maxElementLines = 4096

// locator is a forgiving TOML scanner that records where keys are.
type locator struct {
	src    string
	i      int
	line   int
	lines  lineIndex
	arrays map[string]int // array-of-tables path (indexed) -> elements so far
	deepAt int            // line where values nest deeper than MaxNesting
}

// locate indexes the lines of src's keys. deepAt is the line where values
// nest deeper than MaxNesting, where it stopped; 0 if they do not.
func locate(src []byte) (lines lineIndex, deepAt int) {
	p := &locator{src: string(src), line: 1, lines: lineIndex{}, arrays: map[string]int{}}
	p.document()
	return p.lines, p.deepAt
}

// tooDeep stops the scan at the first value nested beyond MaxNesting.
func (p *locator) tooDeep(depth int) bool {
	if depth < MaxNesting {
		return false
	}
	p.deepAt = p.line
	p.i = len(p.src)
	return true
}

func (p *locator) set(key string) {
	if _, ok := p.lines[key]; !ok && key != "" {
		p.lines[key] = p.line
	}
}

func (p *locator) eof() bool { return p.i >= len(p.src) }

func (p *locator) peek(s string) bool { return strings.HasPrefix(p.src[p.i:], s) }

// advance moves past n bytes, counting newlines.
func (p *locator) advance(n int) {
	for ; n > 0 && p.i < len(p.src); n-- {
		if p.src[p.i] == '\n' {
			p.line++
		}
		p.i++
	}
}

// skipSpace skips blanks, and with newlines also newlines and comments.
func (p *locator) skipSpace(newlines bool) {
	for !p.eof() {
		switch c := p.src[p.i]; {
		case c == ' ' || c == '\t' || c == '\r':
			p.i++
		case c == '#':
			for !p.eof() && p.src[p.i] != '\n' {
				p.i++
			}
		case c == '\n' && newlines:
			p.advance(1)
		default:
			return
		}
	}
}

func (p *locator) skipLine() {
	for !p.eof() && p.src[p.i] != '\n' {
		p.advance(1)
	}
}

func (p *locator) document() {
	prefix := ""
	for {
		p.skipSpace(true)
		if p.eof() {
			return
		}
		if p.src[p.i] == '[' {
			prefix = p.header()
			p.skipLine()
			continue
		}
		parts := p.key()
		p.skipSpace(false)
		if len(parts) == 0 || !p.peek("=") {
			p.skipLine()
			continue
		}
		p.advance(1)
		p.value(p.keyPath(prefix, parts), 0)
	}
}

// header reads [a.b] or [[a.b]] and returns the table's indexed path.
func (p *locator) header() string {
	aot := p.peek("[[")
	if aot {
		p.advance(2)
	} else {
		p.advance(1)
	}
	parts := p.key()
	full := ""
	for i, part := range parts {
		full = join(full, part)
		if i == len(parts)-1 && aot {
			n := p.arrays[full]
			p.arrays[full] = n + 1
			full += "." + strconv.Itoa(n)
			break
		}
		if n, ok := p.arrays[full]; ok {
			full += "." + strconv.Itoa(n-1)
		}
		p.set(full)
	}
	p.set(full)
	return full
}

// keyPath joins a dotted key to its table, recording every level.
func (p *locator) keyPath(prefix string, parts []string) string {
	full := prefix
	for _, part := range parts {
		full = join(full, part)
		p.set(full)
	}
	return full
}

func join(a, b string) string {
	if a == "" {
		return b
	}
	return a + "." + b
}

// key reads a dotted key: bare or quoted parts separated by dots.
func (p *locator) key() []string {
	var parts []string
	for {
		p.skipSpace(false)
		if p.eof() {
			return parts
		}
		var part string
		switch c := p.src[p.i]; {
		case c == '"':
			part = p.basicString()
		case c == '\'':
			part = p.literalString()
		default:
			start := p.i
			for !p.eof() && isBare(p.src[p.i]) {
				p.i++
			}
			if p.i == start {
				return parts
			}
			part = p.src[start:p.i]
		}
		parts = append(parts, part)
		p.skipSpace(false)
		if !p.peek(".") {
			return parts
		}
		p.advance(1)
	}
}

func isBare(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// basicString reads "..." and returns its content with the common
// escapes resolved (enough to match quoted key names).
func (p *locator) basicString() string {
	p.advance(1)
	var b strings.Builder
	for !p.eof() {
		c := p.src[p.i]
		switch {
		case c == '"':
			p.advance(1)
			return b.String()
		case c == '\n':
			return b.String()
		case c == '\\' && p.i+1 < len(p.src):
			switch e := p.src[p.i+1]; e {
			case 'n':
				b.WriteByte('\n')
			case 't':
				b.WriteByte('\t')
			default:
				b.WriteByte(e)
			}
			p.advance(2)
		default:
			b.WriteByte(c)
			p.advance(1)
		}
	}
	return b.String()
}

func (p *locator) literalString() string {
	p.advance(1)
	start := p.i
	for !p.eof() && p.src[p.i] != '\'' && p.src[p.i] != '\n' {
		p.advance(1)
	}
	s := p.src[start:p.i]
	if p.peek("'") {
		p.advance(1)
	}
	return s
}

// multiline skips a multi-line string (three quotes, double or single),
// which may hold quotes and newlines and end in up to two extra quotes.
func (p *locator) multiline(delim string) {
	p.advance(3)
	for !p.eof() {
		if delim == `"""` && p.src[p.i] == '\\' {
			p.advance(2)
			continue
		}
		if p.peek(delim) {
			p.advance(3)
			for n := 0; n < 2 && p.peek(delim[:1]); n++ {
				p.advance(1)
			}
			return
		}
		p.advance(1)
	}
}

// value skips one value, recording the keys and array elements in it.
func (p *locator) value(path string, depth int) {
	p.skipSpace(false)
	if p.eof() {
		return
	}
	switch c := p.src[p.i]; {
	case p.peek(`"""`) || p.peek(`'''`):
		p.multiline(p.src[p.i : p.i+3])
	case c == '"':
		p.basicString()
	case c == '\'':
		p.literalString()
	case c == '[':
		p.array(path, depth)
	case c == '{':
		p.inlineTable(path, depth)
	default:
		for !p.eof() && !strings.ContainsRune(",]}#\n", rune(p.src[p.i])) {
			p.i++
		}
	}
}

func (p *locator) array(path string, depth int) {
	if p.tooDeep(depth) {
		return
	}
	p.advance(1)
	for n := 0; ; {
		p.skipSpace(true)
		if p.eof() {
			return
		}
		switch p.src[p.i] {
		case ']':
			p.advance(1)
			return
		case ',':
			p.advance(1)
			continue
		}
		start := p.i
		elem := path + "." + strconv.Itoa(n)
		if n < maxElementLines {
			p.set(elem)
		}
		p.value(elem, depth+1)
		if p.i == start {
			p.advance(1) // never loop on a byte no rule takes
		}
		n++
	}
}

func (p *locator) inlineTable(path string, depth int) {
	if p.tooDeep(depth) {
		return
	}
	p.advance(1)
	for {
		p.skipSpace(true)
		if p.eof() {
			return
		}
		switch p.src[p.i] {
		case '}':
			p.advance(1)
			return
		case ',':
			p.advance(1)
			continue
		}
		start := p.i
		parts := p.key()
		p.skipSpace(false)
		if len(parts) > 0 && p.peek("=") {
			p.advance(1)
			full := p.keyPath(path, parts)
			p.value(full, depth+1)
		}
		if p.i == start {
			p.advance(1)
		}
	}
}
