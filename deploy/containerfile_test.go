package deploy_test

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestContainerfile checks the image recipe without a container engine:
// the final stage is empty but for the agent, the build line produces a
// static binary (run here for real), and the DaemonSet names the image the
// recipe documents.
func TestContainerfile(t *testing.T) {
	cf := readFile(t, "Containerfile")
	var build string
	var stages []string
	for _, l := range strings.Split(cf, "\n") {
		if strings.HasPrefix(l, "FROM ") {
			stages = append(stages, l)
		}
		if strings.HasPrefix(l, "RUN CGO_ENABLED=0 go build ") {
			build = strings.TrimPrefix(l, "RUN ")
		}
	}
	if len(stages) == 0 || stages[len(stages)-1] != "FROM scratch" {
		t.Errorf("final stage is %q, want FROM scratch", stages)
	}
	for _, want := range []string{
		"COPY --from=build /out/fanaudit /usr/bin/fanaudit",
		"COPY config.toml.example /etc/fanaudit/config.toml",
		`ENTRYPOINT ["/usr/bin/fanaudit"]`,
		`CMD ["run", "--config", "/etc/fanaudit/config.toml"]`,
	} {
		if !strings.Contains(cf, want+"\n") {
			t.Errorf("Containerfile lacks %q", want)
		}
	}
	manifest := readFile(t, manifestPath)
	m := regexp.MustCompile(`(?m)^\s+image: (\S+):(\S+)$`).FindStringSubmatch(manifest)
	if m == nil || !strings.Contains(cf, "-t "+m[1]+":") {
		t.Errorf("the DaemonSet's image %q is not the one the Containerfile documents building", m)
	}
	if build == "" {
		t.Fatal("Containerfile has no `RUN CGO_ENABLED=0 go build` line")
	}

	agentBinary(t) // skips until cmd/fanaudit exists
	out := filepath.Join(t.TempDir(), "fanaudit")
	build = strings.ReplaceAll(build, "${VERSION}", "0.0.0-test")
	build = strings.ReplaceAll(build, "/out/fanaudit", out)
	cmd := exec.Command("sh", "-c", build)
	cmd.Dir = repoRoot(t)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", build, err, b)
	}
	f, err := elf.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("binary has an ELF interpreter: not static, it would not run FROM scratch")
		}
	}
	if libs, err := f.ImportedLibraries(); err != nil || len(libs) > 0 {
		t.Errorf("binary links %q (%v): not static", libs, err)
	}
	if b, err := exec.Command(out, "version").CombinedOutput(); err != nil {
		t.Errorf("%s version: %v\n%s", out, err, b)
	} else if !strings.Contains(string(b), "0.0.0-test") {
		t.Errorf("version output %q lacks the -X main.version value 0.0.0-test", b)
	}
	_ = os.Remove(out)
}
