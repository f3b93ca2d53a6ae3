package main

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// verify finds a live file's rotated files and orders them oldest first:
// logrotate's numbered ones (higher is older), then dated ones, then the
// sink's own timestamps, then the live file; other names are left out.
func TestStreamFiles(t *testing.T) {
	dir := t.TempDir()
	names := []string{
		"events.json",
		"events.json.1",
		"events.json.2.gz",
		"events.json.10.gz",
		"events.json-20261129.gz",
		"events.json.20261130T100000.000000000Z.gz",
		"events.json.20261130T090000.000000000Z",
		"events.json.20261130T090000.000000000Z.gz", // a compression cut short
		"events.json.bak",
		"events.jsonx.1",
		"other.json",
	}
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	got, err := streamFiles([]string{filepath.Join(dir, "events.json")})
	if err != nil {
		t.Fatal(err)
	}
	for i := range got {
		got[i] = filepath.Base(got[i])
	}
	want := []string{
		"events.json.10.gz",
		"events.json.2.gz",
		"events.json.1",
		"events.json-20261129.gz",
		"events.json.20261130T090000.000000000Z",
		"events.json.20261130T100000.000000000Z.gz",
		"events.json",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("streamFiles:\n got %q\nwant %q", got, want)
	}
	// A rotated file named alone is taken alone.
	got, err = streamFiles([]string{filepath.Join(dir, "events.json.1")})
	if err != nil || len(got) != 1 {
		t.Fatalf("a rotated file alone: %q, %v", got, err)
	}
}
