package audit

import (
	"bytes"
	"errors"
	"fmt"
	"unicode/utf8"
)

// ErrBadEscape is wrapped by UnescapePath for input EscapePath cannot produce.
var ErrBadEscape = errors.New("bad path escape")

const hexDigits = "0123456789abcdef"

// EscapePath turns raw path bytes into a string that is valid UTF-8 and
// maps back to the same bytes with UnescapePath. Linux names are arbitrary
// bytes but JSON wants UTF-8, so:
//
//   - every valid UTF-8 sequence other than a backslash passes unchanged;
//   - a literal backslash becomes two backslashes (\\);
//   - every byte that is not part of a valid UTF-8 sequence becomes \xHH,
//     two lowercase hex digits.
//
// A path with neither backslashes nor invalid bytes, the common case, is
// returned as is (one allocation for the string).
func EscapePath(b []byte) string {
	if bytes.IndexByte(b, '\\') < 0 && utf8.Valid(b) {
		return string(b)
	}
	return string(appendEscaped(make([]byte, 0, len(b)+8), b))
}

// appendEscaped appends the escaped form of b to dst.
func appendEscaped(dst, b []byte) []byte {
	start := 0
	for i := 0; i < len(b); {
		c := b[i]
		if c < utf8.RuneSelf && c != '\\' {
			i++
			continue
		}
		if c == '\\' {
			dst = append(dst, b[start:i]...)
			dst = append(dst, '\\', '\\')
			i++
			start = i
			continue
		}
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n == 1 {
			dst = append(dst, b[start:i]...)
			dst = append(dst, '\\', 'x', hexDigits[c>>4], hexDigits[c&0xf])
			i++
			start = i
			continue
		}
		i += n
	}
	return append(dst, b[start:]...)
}

// UnescapePath reverses EscapePath. It fails with an error wrapping
// ErrBadEscape on a lone backslash, an unknown escape, or bad hex digits.
func UnescapePath(s string) ([]byte, error) {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' {
			out = append(out, c)
			continue
		}
		if i+1 >= len(s) {
			return nil, fmt.Errorf("%w: trailing backslash at byte %d", ErrBadEscape, i)
		}
		switch s[i+1] {
		case '\\':
			out = append(out, '\\')
			i++
		case 'x':
			if i+3 >= len(s) {
				return nil, fmt.Errorf("%w: short \\x at byte %d", ErrBadEscape, i)
			}
			hi, ok1 := unhex(s[i+2])
			lo, ok2 := unhex(s[i+3])
			if !ok1 || !ok2 {
				return nil, fmt.Errorf("%w: bad hex in \\x at byte %d", ErrBadEscape, i)
			}
			out = append(out, hi<<4|lo)
			i += 3
		default:
			return nil, fmt.Errorf("%w: unknown escape \\%c at byte %d", ErrBadEscape, s[i+1], i)
		}
	}
	return out, nil
}

// unhex accepts only the lowercase digits EscapePath writes, so every
// escaped string has exactly one spelling.
func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}
