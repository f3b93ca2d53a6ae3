package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
)

// memtouchC touches memory in a throwaway process: the VM backs guest
// memory lazily, and the first runs would otherwise pay for it.
const memtouchC = `#include <stdlib.h>
#include <string.h>
int main(int argc, char **argv) {
    size_t gib = argc > 1 ? strtoul(argv[1], 0, 10) : 3;
    size_t n = gib << 30;
    char *p = malloc(n);
    if (!p) return 1;
    memset(p, 1, n);
    return p[n / 2] == 1 ? 0 : 1;
}
`

// buildSticks compiles wl.c, fanread.c and memtouch into bin.
func buildSticks(ctx context.Context, sticks, bin string) error {
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return fmt.Errorf("bin dir: %w", err)
	}
	mt := filepath.Join(bin, "memtouch.c")
	if err := os.WriteFile(mt, []byte(memtouchC), 0o644); err != nil {
		return fmt.Errorf("memtouch source: %w", err)
	}
	for name, src := range map[string]string{
		"wl":       filepath.Join(sticks, "wl.c"),
		"fanread":  filepath.Join(sticks, "fanread.c"),
		"memtouch": mt,
	} {
		if _, err := run(ctx, "", "cc", "-O2", "-Wall", "-o", filepath.Join(bin, name), src); err != nil {
			return fmt.Errorf("build %s: %w", name, err)
		}
	}
	return nil
}

// BuildFanaudit builds ./cmd/fanaudit from repo into dst. It reports
// ok=false without an error when the command has no Go files yet.
func BuildFanaudit(ctx context.Context, repo, dst string) (ok bool, err error) {
	m, _ := filepath.Glob(filepath.Join(repo, "cmd", "fanaudit", "*.go"))
	if len(m) == 0 {
		return false, nil
	}
	// The fanaudit_bench tag adds the drain and profile hooks
	// (FANAUDIT_BENCH_DRAIN, FANAUDIT_CPUPROFILE); the production binary
	// has neither.
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-tags", "fanaudit_bench", "-o", dst, "./cmd/fanaudit")
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return false, fmt.Errorf("go build ./cmd/fanaudit: %w: %s", err, out)
	}
	return true, nil
}

// FindFatrace returns fatrace's path, installing Debian's package first if
// install is set and it is missing.
func FindFatrace(ctx context.Context, install bool) (string, error) {
	if p, err := exec.LookPath("fatrace"); err == nil {
		return p, nil
	}
	if !install {
		return "", fmt.Errorf("fatrace not installed")
	}
	// A fresh machine may have no package lists yet.
	for _, args := range [][]string{{"update", "-qq"}, {"install", "-y", "-qq", "--no-install-recommends", "fatrace"}} {
		cmd := exec.CommandContext(ctx, "apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("apt-get %s: %w: %s", args[0], err, out)
		}
	}
	return exec.LookPath("fatrace")
}

// Machine describes where the figures come from.
type Machine struct {
	CPU       string
	CPUs      int
	MemTotal  string
	Kernel    string
	Go        string
	Fatrace   string
	Fanaudit  string
	LoadStart string
	LoadEnd   string
	// Steal is the share of CPU time the hypervisor gave to others during
	// the run: how noisy the shared machine was.
	Steal string
}

// cpuTimes reads the aggregate "cpu" line of /proc/stat: total and steal
// jiffies.
func cpuTimes() (total, steal uint64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0
	}
	for i, v := range f[1:] {
		n, _ := strconv.ParseUint(v, 10, 64)
		if i < 8 { // guest time is already inside user and nice
			total += n
		}
		if i == 7 {
			steal = n
		}
	}
	return total, steal
}

func describeMachine(ctx context.Context, o Options) Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), LoadStart: loadavg()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for l := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for l := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "MemTotal:"); ok {
				m.MemTotal = strings.TrimSpace(v)
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if out, err := run(ctx, "", "dpkg-query", "-W", "-f", "${Version}", "fatrace"); err == nil {
		m.Fatrace = strings.TrimSpace(out)
	}
	if o.Repo != "" {
		if out, err := run(ctx, o.Repo, "git", "describe", "--always", "--dirty"); err == nil {
			m.Fanaudit = strings.TrimSpace(out)
		}
	}
	return m
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// runGoBench runs the other packages' microbenchmarks one package at a
// time, so a package without benchmarks (or not yet building) costs only
// its own rows.
func runGoBench(ctx context.Context, o Options) ([]GoBench, map[string]string) {
	errs := map[string]string{}
	var all []GoBench
	bt := o.GoBenchTime
	if bt == "" {
		bt = "1s"
	}
	for _, pkg := range o.GoBenchPkgs {
		o.logf("go test -bench %s", pkg)
		cmd := exec.CommandContext(ctx, "go", "test", "-run", "^$", "-bench", ".", "-benchmem", "-count", "1", "-benchtime", bt, pkg)
		cmd.Dir = o.Repo
		out, err := cmd.CombinedOutput()
		res := ParseGoBench(string(out))
		if err != nil {
			msg := strings.TrimSpace(string(out))
			if len(msg) > 300 {
				msg = msg[:300] + "…"
			}
			errs[pkg] = fmt.Sprintf("%v: %s", err, msg)
		} else if len(res) == 0 {
			errs[pkg] = "no benchmarks"
		}
		for i := range res {
			if res[i].Pkg == "" {
				res[i].Pkg = pkg
			}
		}
		all = append(all, res...)
	}
	return all, errs
}
