package audit

import (
	"errors"
	"testing"

	"github.com/fanaudit/fanaudit/internal/kernel"
)

func TestValidateRejectsBadOptions(t *testing.T) {
	tests := []struct {
		name string
		opts Options
	}{
		{"no paths", Options{}},
		{"no paths but actions", Options{Actions: []Action{ActionOpen}}},
		{"relative path", Options{Paths: []string{"tmp"}}},
		{"missing path", Options{Paths: []string{"/nonexistent/fanaudit"}}},
		{"file as path", Options{Paths: []string{"/proc/self/status"}}},
		{"relative ignore", Options{Paths: []string{"/"}, IgnorePaths: []string{"x"}}},
		{"bad include", Options{Paths: []string{"/"}, Include: []string{"["}}},
		{"bad exclude", Options{Paths: []string{"/"}, Exclude: []string{"a[\\"}}},
		{"bad ignore name", Options{Paths: []string{"/"}, IgnoreNames: []string{"a[\\"}}},
		{"events_lost action", Options{Paths: []string{"/"}, Actions: []Action{ActionEventsLost}}},
		{"unknown action", Options{Paths: []string{"/"}, Actions: []Action{ActionUnknown}}},
		{"tiny buffer", Options{Paths: []string{"/"}, ReadBuffer: 100}},
		{"negative delay", Options{Paths: []string{"/"}, BatchDelay: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// validate, not New: a slip must never mark a system mount.
			c := &Capture{opts: tt.opts}
			err := c.validate()
			if err == nil {
				t.Fatal("validate accepted bad options")
			}
			if !errors.Is(err, ErrOptions) {
				t.Fatalf("err %v does not wrap ErrOptions", err)
			}
		})
	}
}

func TestMarkMask(t *testing.T) {
	all := kernel.Features{FID: true, TargetFID: true, Rename: true, MarkIgnore: true}
	old := kernel.Features{FID: true}
	tests := []struct {
		name   string
		want   []Action
		ft     kernel.Features
		fdMode bool
		mask   uint64
	}{
		{"open only", []Action{ActionOpen}, all, false, kernel.FanOpen | kernel.FanRename | kernel.FanOnDir},
		{"exec only", []Action{ActionExec}, all, false, kernel.FanOpenExec | kernel.FanRename | kernel.FanOnDir},
		{"delete_self adds delete", []Action{ActionDeleteSelf}, all, false, kernel.FanDeleteSelf | kernel.FanDelete | kernel.FanRename | kernel.FanOnDir},
		{"rename before 5.17", []Action{ActionRename}, old, false, kernel.FanMovedFrom | kernel.FanMovedTo | kernel.FanOnDir},
		{"fd mode drops FID-only actions", []Action{ActionCreate, ActionCloseWrite}, all, true, kernel.FanCloseWrite | kernel.FanOnDir},
		{"fd mode with nothing left", []Action{ActionCreate}, all, true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := markMask(setOf(tt.want), tt.ft, tt.fdMode); got != tt.mask {
				t.Fatalf("mask %#x, want %#x", got, tt.mask)
			}
		})
	}
}

func TestScope(t *testing.T) {
	s := scope{
		roots:   []string{"/m/w", "/n"},
		ignore:  []string{"/m/w/out", "/n/log.json"},
		exclude: compileGlobs([]string{"/m/w/*.tmp", "/m/w/cache", "*.swp", "/m/w/[xy]/esc\\*"}),
	}
	tests := []struct {
		path string
		ok   bool
	}{
		{"/m/w", true},
		{"/m/w/a", true},
		{"/m/wx", false},
		{"/m/other", false},
		{"/n/x/y", true},
		{"/m/w/out", false},
		{"/m/w/out/f", false},
		{"/m/w/outer", true},
		{"/n/log.json", false},
		{"/m/w/a.tmp", false},
		{"/m/w/a.tmp/inner", false},
		{"/m/w/cache/x/y", false},
		{"/m/w/x/.a.swp", false},
		{"/m/w/x.swp/y", false},
		{"/m/w/x.swpy", true},
		{"/m/w/x/esc*", false},
		{"/m/w/x/escX", true},
		{"/m/w/z/esc*", true},
		{"", true},
	}
	for _, tt := range tests {
		if got := s.allowed(tt.path); got != tt.ok {
			t.Errorf("allowed(%q) = %v, want %v", tt.path, got, tt.ok)
		}
	}
	inc := scope{roots: []string{"/"}, include: compileGlobs([]string{"/etc/*"})}
	for p, ok := range map[string]bool{"/etc/passwd": true, "/etc/ssh/sshd_config": true, "/var/x": false} {
		if inc.allowed(p) != ok {
			t.Errorf("include: allowed(%q) != %v", p, ok)
		}
	}
}
