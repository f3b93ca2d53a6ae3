package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// The unwatched-sibling rows (issue #14): DIR/watched and DIR/other on the
// same tmpfs; the monitor watches DIR/watched while wl runs in DIR/other.
// What a monitor costs there is what it costs the rest of a filesystem it
// watches only a part of. The agent's run also checks that the watched
// subtree is still fully reported meanwhile, in a directory that existed
// before it started and in one made after.

const (
	sibWatched = "watched"
	sibOther   = "other"
	sibOld     = "old"     // made before the monitor starts
	sibNew     = "new-dir" // made after the monitor has marked
	// sibBurst is made after the start too, and the work in it starts at
	// once, racing the agent's mark on it: what inode marks cannot see
	// before the mark is there shows up as missing (or announced) here.
	sibBurst = "burst-dir"
)

func siblingConfigs(e *env) []config {
	tree := append(slices.Clone(refArgs), "-S", "1000", "-k", "tree")
	fs := append(slices.Clone(refArgs), "-S", "1000", "-k", "fs")
	cs := []config{
		{name: nameSibNone, command: "wl DIR/other N", run: func(ctx context.Context, e *env, dir, tag string) (Sample, error) {
			other, _, err := siblingDirs(dir)
			if err != nil {
				return Sample{}, err
			}
			wl, err := e.wl(ctx, other)
			return Sample{WL: wl}, err
		}},
	}
	if e.o.Fanaudit != "" {
		script := fmt.Sprintf("while wl runs in DIR/other: "+
			"mkdir DIR/watched/%s, wait for its record, then wl %d files in it and in DIR/watched/%s (made before the start); then mkdir DIR/watched/%s and wl %d files in it at once", sibNew, e.o.ScopeFiles, sibOld, sibBurst, e.o.ScopeFiles)
		def := defaultScope(e.o.Fanaudit)
		cs = append(cs, config{
			name:    nameSibAgent,
			command: fmt.Sprintf("fanaudit run, default config (scope %s, as check-config prints it) + file sink, paths = [DIR/watched]; %s", def, script),
			ops:     allOps,
			run:     fanauditSibling(""),
		})
		if def != "subtree" {
			cs = append(cs, config{
				name:    nameSibSubtree,
				command: "fanaudit run, default config but [capture] scope = \"subtree\" (inode marks, opt-in) + file sink, paths = [DIR/watched]; " + script,
				ops:     allOps,
				run:     fanauditSibling("subtree"),
			})
		}
	}
	cs = append(cs,
		fanreadSibling(nameSibTree, tree),
		fanreadSibling(nameSibFS, fs),
	)
	return cs
}

// siblingDirs makes DIR/other, DIR/watched and DIR/watched/old.
func siblingDirs(dir string) (other, watched string, err error) {
	other, watched = filepath.Join(dir, sibOther), filepath.Join(dir, sibWatched)
	for _, d := range []string{other, watched, filepath.Join(watched, sibOld)} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return "", "", fmt.Errorf("sibling dirs: %w", err)
		}
	}
	return other, watched, nil
}

func fanreadSibling(name string, args []string) config {
	return config{
		name:    name,
		command: "fanread " + strings.Join(args, " ") + " DIR/watched; wl DIR/other N",
		run: func(ctx context.Context, e *env, dir, tag string) (Sample, error) {
			other, watched, err := siblingDirs(dir)
			if err != nil {
				return Sample{}, err
			}
			return fanreadRun(ctx, e, watched, tag, args, func(ctx context.Context, _ string) (WLResult, error) {
				return e.wl(ctx, other)
			})
		},
	}
}

// defaultScope asks the agent which [capture] scope its default config
// uses (check-config prints the effective config), so the row says what
// users run; "?" when it cannot tell.
func defaultScope(fanaudit string) string {
	f, err := os.CreateTemp("", "fabench-scope-*.toml")
	if err != nil {
		return "?"
	}
	defer os.Remove(f.Name())
	// check-config does not look at the paths; a config needs one.
	_, err = f.WriteString("paths = [\"/nonexistent\"]\n")
	if cerr := f.Close(); err != nil || cerr != nil {
		return "?"
	}
	out, err := exec.Command(fanaudit, "check-config", "--config", f.Name()).Output()
	if err != nil {
		return "?"
	}
	for line := range strings.SplitSeq(string(out), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "scope = "); ok {
			if s, err := strconv.Unquote(v); err == nil {
				return s
			}
		}
	}
	return "?"
}

// fanauditSibling runs the agent's sibling row with [capture] scope
// (empty: the default).
func fanauditSibling(scope string) func(ctx context.Context, e *env, dir, tag string) (Sample, error) {
	return func(ctx context.Context, e *env, dir, tag string) (Sample, error) {
		return fanauditSiblingScope(ctx, e, dir, tag, scope)
	}
}

func fanauditSiblingScope(ctx context.Context, e *env, dir, tag, scope string) (Sample, error) {
	other, watched, err := siblingDirs(dir)
	if err != nil {
		return Sample{}, err
	}
	newDir, oldDir, burstDir := filepath.Join(watched, sibNew), filepath.Join(watched, sibOld), filepath.Join(watched, sibBurst)
	k := e.o.ScopeFiles
	var warn string
	s, out, err := fanauditLiveScope(ctx, e, watched, tag, sinkFile, scope, func(ctx context.Context, m *monitor, out string) (WLResult, error) {
		type result struct {
			wl  WLResult
			err error
		}
		done := make(chan result, 1)
		go func() {
			wl, err := e.wl(ctx, other)
			done <- result{wl, err}
		}()
		var serr error
		warn, serr = e.scopeOps(ctx, m, out, newDir, oldDir, burstDir, k)
		r := <-done
		if r.err != nil {
			return r.wl, r.err
		}
		return r.wl, serr
	})
	if warn != "" {
		s.Warn = strings.TrimPrefix(s.Warn+"; "+warn, "; ")
	}
	if err != nil {
		return s, err
	}
	f, err := os.Open(out)
	if err != nil {
		return s, fmt.Errorf("fanaudit output: %w", err)
	}
	defer f.Close()
	_, under, outside, err := ParseFanauditUnder(f, watched, newDir, oldDir, burstDir)
	if err != nil {
		return s, err
	}
	s.ScopeChecked = true
	s.OutOfScope = outside
	for _, c := range under[:2] {
		s.ScopeOps += c.total()
		s.ScopeMissing += Missing(c, allOps, k, e.o.Block)
	}
	s.BurstOps = under[2].total()
	s.BurstMissing = Missing(under[2], allOps, k, e.o.Block)
	if under[2].Windows > 0 {
		// The record names the directory, with no count: every operation
		// missing there is covered by it.
		s.BurstAnnounced = s.BurstMissing
	}
	return s, nil
}

// scopeOps is the scripted work inside the watched subtree: mkdir newDir
// once the agent runs, wait until its create record is written (the agent
// has seen the directory, so it watches it), then wl with k files in it
// and in oldDir; last, mkdir burstDir and wl in it at once. A record that
// never shows up is a warning: the work is done anyway, and what was not
// reported counts as missing.
func (e *env) scopeOps(ctx context.Context, m *monitor, out, newDir, oldDir, burstDir string, k int) (warn string, err error) {
	if err := os.Mkdir(newDir, 0o755); err != nil {
		return "", fmt.Errorf("scope check: %w", err)
	}
	if err := waitFile(ctx, out, readyTimeout, m); err != nil {
		return "", fmt.Errorf("scope check: %w", err)
	}
	if err := m.waitContains(ctx, out, []byte(`"file":{"path":"`+newDir+`"`), readyTimeout, nil); err != nil {
		if ctx.Err() != nil {
			return "", err
		}
		warn = "scope check: no record of the new directory: " + err.Error()
	}
	for _, d := range []string{newDir, oldDir} {
		if _, err := e.wlN(ctx, d, k); err != nil {
			return warn, fmt.Errorf("scope check: %w", err)
		}
	}
	if err := os.Mkdir(burstDir, 0o755); err != nil {
		return warn, fmt.Errorf("scope check: %w", err)
	}
	if _, err := e.wlN(ctx, burstDir, k); err != nil {
		return warn, fmt.Errorf("scope check: %w", err)
	}
	return warn, nil
}
