package main

import (
	"errors"
	"testing"
)

// TestFlagProblems: a bad flag is named with the contract's double dash,
// from typed state rather than from the flag package's message.
func TestFlagProblems(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--duration", "soon", "/tmp"}, `watch: --duration: invalid value "soon": parse error`},
		{[]string{"/tmp", "-duration=5"}, `watch: --duration: invalid value "5": parse error`},
		{[]string{"/tmp", "--follow"}, "watch: unknown flag --follow"},
		{[]string{"--follow=x", "/tmp"}, "watch: unknown flag --follow"},
		{[]string{"/tmp", "--events"}, "watch: flag needs an argument: --events"},
		{[]string{"--exclude", "a", "--events"}, "watch: flag needs an argument: --events"},
	}
	for _, tc := range tests {
		fs := newFlagSet("watch")
		fs.Duration("duration", 0, "")
		fs.String("events", "", "")
		var ex listFlag
		fs.Var(&ex, "exclude", "")
		_, err := parseFlags("watch", fs, tc.args)
		var ue *usageError
		if !errors.As(err, &ue) || err.Error() != tc.want {
			t.Errorf("%q: got %v, want %s", tc.args, err, tc.want)
		}
	}
}
