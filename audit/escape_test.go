package audit

import (
	"bytes"
	"errors"
	"testing"
	"unicode/utf8"
)

func TestEscapePath(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, ""},
		{"ascii", []byte("/m/a/b.txt"), "/m/a/b.txt"},
		{"utf8", []byte("/m/héllo/日本"), "/m/héllo/日本"},
		{"backslash", []byte(`/m/a\b`), `/m/a\\b`},
		{"invalid byte", []byte("/m/\xff"), `/m/\xff`},
		{"invalid then backslash", []byte("\xfe\\"), `\xfe\\`},
		{"literal escape text", []byte(`\xff`), `\\xff`},
		{"truncated utf8", []byte("a\xe6\x97"), `a\xe6\x97`},
		{"surrogate", []byte("\xed\xa0\x80"), `\xed\xa0\x80`},
		{"replacement char is valid", []byte("\xef\xbf\xbd"), "\ufffd"},
		{"nul and control", []byte("a\x00\x01"), "a\x00\x01"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := EscapePath(tt.in)
			if got != tt.want {
				t.Fatalf("EscapePath(%q) = %q, want %q", tt.in, got, tt.want)
			}
			if !utf8.ValidString(got) {
				t.Fatalf("%q is not valid UTF-8", got)
			}
			back, err := UnescapePath(got)
			if err != nil || !bytes.Equal(back, tt.in) {
				t.Fatalf("UnescapePath(%q) = %q, %v; want %q", got, back, err, tt.in)
			}
		})
	}
}

func TestUnescapePathErrors(t *testing.T) {
	for _, in := range []string{`\`, `a\`, `\x`, `\xf`, `\xFF`, `\xgg`, `\n`, `\\\`} {
		if _, err := UnescapePath(in); !errors.Is(err, ErrBadEscape) {
			t.Errorf("UnescapePath(%q) err = %v, want ErrBadEscape", in, err)
		}
	}
}

func FuzzEscapeRoundTrip(f *testing.F) {
	f.Add([]byte("a\xff\\b"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s := EscapePath(b)
		if !utf8.ValidString(s) {
			t.Fatalf("%q not UTF-8", s)
		}
		back, err := UnescapePath(s)
		if err != nil || !bytes.Equal(back, b) {
			t.Fatalf("round trip %q -> %q -> %q, %v", b, s, back, err)
		}
	})
}

func BenchmarkEscapePath(b *testing.B) {
	p := []byte("/srv/data/project/some-file-name.txt")
	b.ReportAllocs()
	for b.Loop() {
		_ = EscapePath(p)
	}
}
