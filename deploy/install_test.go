package deploy_test

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// installTree lists everything under destdir as "path mode", sorted.
func installTree(t *testing.T, destdir string) []string {
	t.Helper()
	var tree []string
	err := filepath.WalkDir(destdir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == destdir {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(destdir, p)
		tree = append(tree, "/"+rel+" "+fi.Mode().String())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(tree)
	return tree
}

func wantTree(prefix string) []string {
	dirs := map[string]bool{}
	var tree []string
	addDirs := func(p string) {
		for d := filepath.Dir(p); d != "/"; d = filepath.Dir(d) {
			if !dirs[d] {
				dirs[d] = true
				mode := "drwxr-xr-x"
				switch d {
				case "/etc/fanaudit", "/var/log/fanaudit", "/var/lib/fanaudit":
					mode = "drwxr-x---"
				}
				tree = append(tree, d+" "+mode)
			}
		}
	}
	files := []string{
		prefix + "/bin/fanaudit -rwxr-xr-x",
		prefix + "/lib/systemd/system/fanaudit.service -rw-r--r--",
		prefix + "/share/doc/fanaudit/config.toml.example -rw-r--r--",
		prefix + "/share/doc/fanaudit/operations.md -rw-r--r--",
		"/etc/fanaudit/config.toml -rw-r-----",
		"/etc/logrotate.d/fanaudit -rw-r--r--",
	}
	for _, f := range files {
		addDirs(strings.Fields(f)[0])
		tree = append(tree, f)
	}
	for _, d := range []string{"/var/log/fanaudit/x", "/var/lib/fanaudit/x"} {
		addDirs(d)
	}
	slices.Sort(tree)
	return tree
}

func runInstall(t *testing.T, destdir, prefix, bin string) (string, error) {
	t.Helper()
	out, err := exec.Command("bash", "install.sh", destdir, prefix, bin).CombinedOutput()
	return string(out), err
}

// TestInstall runs deploy/install.sh (what `make install` calls) into a
// temporary DESTDIR and checks the tree, file by file and mode by mode.
func TestInstall(t *testing.T) {
	root := repoRoot(t)
	example := readFile(t, filepath.Join(root, "config.toml.example"))
	// install.sh copies whatever binary it is given; the agent itself is
	// installed by TestMakeInstall.
	standIn, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		prefix     string
		oldConfig  string // existing /etc/fanaudit/config.toml, "" for none
		runs       int
		wantConfig string
	}{
		{name: "fresh /usr/local", prefix: "/usr/local", runs: 1, wantConfig: example},
		{name: "fresh /usr", prefix: "/usr", runs: 1, wantConfig: example},
		{name: "trailing slash", prefix: "/opt/fanaudit/", runs: 1, wantConfig: example},
		{name: "existing config kept", prefix: "/usr/local", oldConfig: "paths = [\"/srv\"]\n", runs: 1, wantConfig: "paths = [\"/srv\"]\n"},
		{name: "second install keeps the first's config", prefix: "/usr", runs: 2, wantConfig: example},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			destdir := t.TempDir()
			prefix := strings.TrimSuffix(tt.prefix, "/")
			if tt.oldConfig != "" {
				if err := os.MkdirAll(filepath.Join(destdir, "etc"), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.Mkdir(filepath.Join(destdir, "etc/fanaudit"), 0o750); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(destdir, "etc/fanaudit/config.toml"), []byte(tt.oldConfig), 0o640); err != nil {
					t.Fatal(err)
				}
			}
			for i := range tt.runs {
				if i == 1 {
					// The admin edits the config between installs.
					if err := os.WriteFile(filepath.Join(destdir, "etc/fanaudit/config.toml"), []byte(example+"\n# edited\n"), 0o640); err != nil {
						t.Fatal(err)
					}
					tt.wantConfig = example + "\n# edited\n"
				}
				if out, err := runInstall(t, destdir, tt.prefix, standIn); err != nil {
					t.Fatalf("install.sh: %v\n%s", err, out)
				}
			}
			if got, want := installTree(t, destdir), wantTree(prefix); !slices.Equal(got, want) {
				t.Errorf("installed tree:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			if got := readFile(t, filepath.Join(destdir, "etc/fanaudit/config.toml")); got != tt.wantConfig {
				t.Errorf("config.toml = %q, want %q", got, tt.wantConfig)
			}
			if got := readFile(t, filepath.Join(destdir, prefix, "share/doc/fanaudit/config.toml.example")); got != example {
				t.Errorf("share/doc config.toml.example differs from the repository's")
			}
			if got, want := readFile(t, filepath.Join(destdir, "etc/logrotate.d/fanaudit")), readFile(t, snippetPath); got != want {
				t.Errorf("logrotate snippet differs from %s", snippetPath)
			}
			unit := readFile(t, filepath.Join(destdir, prefix, "lib/systemd/system/fanaudit.service"))
			wantExec := prefix + "/bin/fanaudit run --config /etc/fanaudit/config.toml"
			if got := unitValues(unit, "ExecStart"); len(got) != 1 || got[0] != wantExec {
				t.Errorf("installed unit ExecStart = %q, want %q", got, wantExec)
			}
			// The installed unit must verify with the installed binary.
			verifyUnit(t, unit, prefix+"/bin/fanaudit", filepath.Join(destdir, prefix, "bin/fanaudit"))
		})
	}
}

func TestInstallRejects(t *testing.T) {
	standIn, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		prefix   string
		bin      string
		wantCode int
	}{
		{"relative prefix", "usr/local", standIn, 2},
		{"missing binary", "/usr/local", filepath.Join(t.TempDir(), "nope"), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			destdir := t.TempDir()
			out, err := runInstall(t, destdir, tt.prefix, tt.bin)
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != tt.wantCode {
				t.Fatalf("install.sh: %v, want exit %d\n%s", err, tt.wantCode, out)
			}
			if tree := installTree(t, destdir); len(tree) != 0 {
				t.Errorf("a failed install left files: %q", tree)
			}
		})
	}
}

// TestMakeInstall runs the Makefile's install target, which builds the
// agent first, and checks that the installed binary is the agent.
func TestMakeInstall(t *testing.T) {
	agentBinary(t) // skips until cmd/fanaudit exists, fails if it does not build
	mk := requireTool(t, "make", "make")
	root := repoRoot(t)
	destdir := t.TempDir()
	// BIN on the command line keeps the build out of the work tree.
	bin := filepath.Join(t.TempDir(), "fanaudit")
	cmd := exec.Command(mk, "-s", "install", "DESTDIR="+destdir, "PREFIX=/usr", "BIN="+bin)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make install: %v\n%s", err, out)
	}
	if got, want := installTree(t, destdir), wantTree("/usr"); !slices.Equal(got, want) {
		t.Errorf("installed tree:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	out, err := exec.Command(filepath.Join(destdir, "usr/bin/fanaudit"), "version").CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) == 0 {
		t.Errorf("installed fanaudit version: %v: %q", err, out)
	}
	// The installed config is the example, and the agent accepts it.
	out, err = exec.Command(filepath.Join(destdir, "usr/bin/fanaudit"), "check-config", "--config", filepath.Join(destdir, "etc/fanaudit/config.toml")).CombinedOutput()
	if err != nil {
		t.Errorf("check-config on the installed config: %v\n%s", err, out)
	}
}
