package config

import (
	"strconv"
	"strings"
)

// keyLines maps dotted keys to the line that sets them. BurntSushi/toml
// v1.6 keeps key positions private (MetaData has no accessor, and keys of
// an array of tables share one entry), so the source is scanned instead.
// Array-of-tables elements carry their index ("sinks.1.when_full");
// "any" holds the first line of each key with the indexes removed, for
// toml's index-less undecoded keys.
type keyLines struct {
	exact map[string]int
	any   map[string]int
}

func (k keyLines) line(key string) int { return lineOf(k.exact, key) }

func (k keyLines) lineAny(key string) int { return lineOf(k.any, key) }

// lineOf finds key's line, or else its nearest parent table's.
func lineOf(lines map[string]int, key string) int {
	for key != "" {
		if l, ok := lines[key]; ok {
			return l
		}
		i := strings.LastIndexByte(key, '.')
		if i < 0 {
			break
		}
		key = key[:i]
	}
	return 0
}

// indexed finds the array-indexed form of an index-less key set on line,
// so that an unknown key in the second [[sinks]] reads sinks[1].x.
func (k keyLines) indexed(key string, line int) string {
	for ik, l := range k.exact {
		if l == line && stripIndexes(ik) == key {
			return ik
		}
	}
	return ""
}

// scanKeyLines is deliberately forgiving: it only locates keys, and the
// TOML decoder remains the judge of syntax.
func scanKeyLines(src []byte) keyLines {
	kl := keyLines{exact: map[string]int{}, any: map[string]int{}}
	set := func(key string, line int) {
		if _, ok := kl.exact[key]; !ok {
			kl.exact[key] = line
		}
		a := stripIndexes(key)
		if _, ok := kl.any[a]; !ok {
			kl.any[a] = line
		}
	}
	arrays := map[string]int{} // array-of-tables path → elements seen
	prefix := ""
	depth := 0 // open [ or { of a multi-line value
	inML := "" // open multi-line string delimiter
	for i, raw := range strings.Split(string(src), "\n") {
		line := i + 1
		s := raw
		if inML != "" {
			if strings.Contains(s, inML) {
				inML = ""
			}
			continue
		}
		s = strings.TrimSpace(stripComment(s))
		if depth > 0 {
			depth += nesting(s)
			continue
		}
		if s == "" {
			continue
		}
		if strings.HasPrefix(s, "[[") {
			name := strings.TrimSuffix(strings.TrimSpace(strings.TrimPrefix(strings.TrimSuffix(s, "]]"), "[[")), "]")
			full := resolve(splitKey(name), arrays, true)
			arrays[stripIndexes(full)]++
			prefix = full + "." + strconv.Itoa(arrays[stripIndexes(full)]-1)
			set(prefix, line)
			continue
		}
		if strings.HasPrefix(s, "[") {
			name := strings.TrimSpace(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"))
			prefix = resolve(splitKey(name), arrays, false)
			set(prefix, line)
			continue
		}
		eq := indexOutsideQuotes(s, '=')
		if eq < 0 {
			continue
		}
		key := strings.Join(splitKey(s[:eq]), ".")
		if prefix != "" {
			key = prefix + "." + key
		}
		set(key, line)
		val := strings.TrimSpace(s[eq+1:])
		for _, d := range []string{`"""`, `'''`} {
			if strings.HasPrefix(val, d) && !strings.Contains(val[3:], d) {
				inML = d
			}
		}
		depth = nesting(val)
	}
	return kl
}

// resolve turns a header's key parts into a full path, inserting the
// current element index after every array of tables it passes through.
func resolve(parts []string, arrays map[string]int, last bool) string {
	full := ""
	for i, p := range parts {
		if full != "" {
			full += "."
		}
		full += p
		if i == len(parts)-1 && last {
			break
		}
		if n := arrays[stripIndexes(full)]; n > 0 {
			full += "." + strconv.Itoa(n-1)
		}
	}
	return full
}

func stripIndexes(key string) string {
	parts := strings.Split(key, ".")
	out := parts[:0]
	for _, p := range parts {
		if _, err := strconv.Atoi(p); err == nil {
			continue
		}
		out = append(out, p)
	}
	return strings.Join(out, ".")
}

func splitKey(s string) []string {
	var parts []string
	var cur strings.Builder
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			} else {
				cur.WriteByte(c)
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '.':
			parts = append(parts, strings.TrimSpace(cur.String()))
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	return append(parts, strings.TrimSpace(cur.String()))
}

func stripComment(s string) string {
	if i := indexOutsideQuotes(s, '#'); i >= 0 {
		return s[:i]
	}
	return s
}

// outsideQuotes calls f with each byte of s that is outside TOML
// strings, in order, until f returns false.
func outsideQuotes(s string, f func(i int, c byte) bool) {
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote == '"' && c == '\\':
			i++
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
		default:
			if !f(i, c) {
				return
			}
		}
	}
}

func indexOutsideQuotes(s string, want byte) int {
	at := -1
	outsideQuotes(s, func(i int, c byte) bool {
		if c == want {
			at = i
			return false
		}
		return true
	})
	return at
}

// nesting is the net count of brackets and braces a value opens.
func nesting(s string) int {
	n := 0
	outsideQuotes(s, func(_ int, c byte) bool {
		switch c {
		case '[', '{':
			n++
		case ']', '}':
			n--
		}
		return true
	})
	return n
}
