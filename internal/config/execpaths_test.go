package config

import (
	"slices"
	"testing"
)

// TestExecPathsDefault: exec marks are on by default, on /usr and the
// other directories that hold executables; an empty list turns them off.
func TestExecPathsDefault(t *testing.T) {
	t.Setenv("PATH", "/usr/bin:relative:/usr/bin:/nonexistent")
	d := DefaultExecPaths()
	if !slices.Contains(d, "/usr") || !slices.Contains(d, "/usr/bin") || slices.Contains(d, "/nonexistent") || slices.Contains(d, "relative") {
		t.Fatalf("DefaultExecPaths = %q", d)
	}
	if n := len(slices.Compact(slices.Clone(d))); n != len(d) {
		t.Fatalf("duplicates in %q", d)
	}
	c, err := Parse("t.toml", []byte(""))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.Capture.ExecPaths, d) {
		t.Fatalf("default exec_paths %q, want %q", c.Capture.ExecPaths, d)
	}
	c, err = Parse("t.toml", []byte("[capture]\nexec_paths = []\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Capture.ExecPaths) != 0 {
		t.Fatalf("exec_paths = [] gave %q", c.Capture.ExecPaths)
	}
}
