package deploy_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// repoRoot is the module root: go test runs in the package directory.
func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root not found from %s: %v", root, err)
	}
	return root
}

var aptMu sync.Mutex

// requireTool returns the path of an external tool, installing its Debian
// package when it is missing and we are root. Without it the test skips,
// except under CI=true, where a missing tool would hide an untested
// artefact and so fails.
func requireTool(t testing.TB, tool, pkg string) string {
	t.Helper()
	if p, err := exec.LookPath(tool); err == nil {
		return p
	}
	if os.Geteuid() == 0 {
		if _, err := exec.LookPath("apt-get"); err == nil {
			aptMu.Lock()
			install := func() ([]byte, error) {
				cmd := exec.Command("apt-get", "install", "-y", "-qq", "--no-install-recommends", pkg)
				cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
				return cmd.CombinedOutput()
			}
			out, err := install()
			if err != nil {
				// A fresh machine has no package lists yet.
				if o, e := exec.Command("apt-get", "update", "-qq").CombinedOutput(); e != nil {
					t.Logf("apt-get update: %v: %s", e, o)
				}
				out, err = install()
			}
			aptMu.Unlock()
			if err != nil {
				t.Logf("apt-get install %s: %v: %s", pkg, err, out)
			}
		}
		if p, err := exec.LookPath(tool); err == nil {
			return p
		}
		// Debian installs some tools in sbin, which a non-login PATH may lack.
		for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin"} {
			p := filepath.Join(dir, tool)
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (Debian package %s) is missing and could not be installed; CI=true makes that a failure", tool, pkg)
	}
	t.Skipf("%s (Debian package %s) is missing", tool, pkg)
	return ""
}

var agent struct {
	once sync.Once
	path string
	out  string
	err  error
	dir  string
}

// agentBinary builds cmd/fanaudit once per test binary, the way the
// Makefile and the Containerfile do (static, CGO off).
func agentBinary(t testing.TB) string {
	t.Helper()
	root := repoRoot(t)
	if !hasGoFiles(filepath.Join(root, "cmd", "fanaudit")) && os.Getenv("CI") != "true" {
		t.Skip("cmd/fanaudit has no Go files yet")
	}
	agent.once.Do(func() {
		agent.dir, agent.err = os.MkdirTemp("", "fanaudit-deploy-bin-")
		if agent.err != nil {
			return
		}
		agent.path = filepath.Join(agent.dir, "fanaudit")
		cmd := exec.Command("go", "build", "-trimpath", "-o", agent.path, "./cmd/fanaudit")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		out, err := cmd.CombinedOutput()
		agent.out, agent.err = string(out), err
	})
	if agent.err != nil {
		t.Fatalf("build cmd/fanaudit: %v\n%s", agent.err, agent.out)
	}
	return agent.path
}

func hasGoFiles(dir string) bool {
	m, _ := filepath.Glob(filepath.Join(dir, "*.go"))
	for _, f := range m {
		if !strings.HasSuffix(f, "_test.go") {
			return true
		}
	}
	return false
}

func TestMain(m *testing.M) {
	code := m.Run()
	if agent.dir != "" {
		os.RemoveAll(agent.dir)
	}
	if validator.path != "" {
		os.RemoveAll(filepath.Dir(validator.path))
	}
	os.Exit(code)
}

func readFile(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// unitValues returns every value of key in a systemd unit file, in order,
// with repeated assignments kept apart.
func unitValues(unit, key string) []string {
	var vals []string
	for _, line := range strings.Split(unit, "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if ok && strings.TrimSpace(k) == key {
			vals = append(vals, strings.TrimSpace(v))
		}
	}
	return vals
}
