package deploy_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fanaudit/fanaudit/internal/testutil"
)

const manifestPath = "kubernetes/fanaudit.yaml"

var validator struct {
	once sync.Once
	path string
	out  string
	err  error
}

// validatorBinary builds kubernetes/validate, its own module: the first
// build fetches k8s.io/api from the Go module proxy, the only network CI has.
func validatorBinary(t *testing.T) string {
	t.Helper()
	validator.once.Do(func() {
		dir, err := os.MkdirTemp("", "fanaudit-validate-")
		if err != nil {
			validator.err = err
			return
		}
		validator.path = filepath.Join(dir, "validate")
		cmd := exec.Command("go", "build", "-o", validator.path, ".")
		cmd.Dir = "kubernetes/validate"
		out, err := cmd.CombinedOutput()
		validator.out, validator.err = string(out), err
	})
	if validator.err != nil {
		t.Fatalf("build kubernetes/validate: %v\n%s", validator.err, validator.out)
	}
	return validator.path
}

func TestManifestValid(t *testing.T) {
	out, err := exec.Command(validatorBinary(t), manifestPath).CombinedOutput()
	if err != nil {
		t.Fatalf("validate %s: %v\n%s", manifestPath, err, out)
	}
	for _, want := range []string{"Namespace/fanaudit", "ConfigMap/fanaudit-config", "DaemonSet/fanaudit"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("validator output lacks %s: %s", want, out)
		}
	}
}

// TestManifestValidatorRejects proves the check has teeth: each mutation of
// the shipped manifest is a mistake the API server or the kubelet would
// reject, and the validator must reject it too.
func TestManifestValidatorRejects(t *testing.T) {
	orig := readFile(t, manifestPath)
	bin := validatorBinary(t)
	tests := []struct {
		name     string
		old, new string
		wantErr  string
	}{
		{"unknown field", "hostPID: true", "hostPid: true", `unknown field "spec.template.spec.hostPid"`},
		{"duplicate field", "hostPID: true", "hostPID: true\n      hostPID: false", "already set in map"},
		{"bad quantity", "memory: 512Mi", "memory: 512MB!", "quantities must match"},
		{"mount without volume", "- name: spool\n              mountPath", "- name: spool2\n              mountPath", `volumeMounts[4].name: Not found: "spool2"`},
		{"probe on unknown port", "port: metrics", "port: metrix", "livenessProbe.httpGet.port: Not found"},
		{"no privilege escalation with SYS_ADMIN", "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: true\n            allowPrivilegeEscalation: false", "CAP_SYS_ADMIN"},
		{"selector does not match", "      labels:\n        app.kubernetes.io/name: fanaudit\n      annotations", "      labels:\n        app.kubernetes.io/name: other\n      annotations", "`selector` does not match template `labels`"},
		{"missing ConfigMap", "name: fanaudit-config\n  namespace", "name: fanaudit-cfg\n  namespace", "configMap.name: Not found"},
		{"request above limit", "memory: 128Mi", "memory: 1Gi", "must be less than or equal to memory limit"},
		{"floating image tag", "fanaudit/fanaudit:0.1.0", "fanaudit/fanaudit:latest", "pin a version tag"},
		{"unknown kind", "kind: ServiceAccount", "kind: ServiceAcount", "unsupported apiVersion/kind"},
		{"unknown AppArmor profile type", "type: Unconfined", "type: Unconfind", `appArmorProfile.type: Unsupported value: "Unconfind"`},
		{"bad capability spelling", `"SYS_NICE"]`, `"CAP_SYS_NICE"]`, "upper case without CAP_"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if strings.Count(orig, tt.old) < 1 {
				t.Fatalf("manifest no longer contains %q; update the test", tt.old)
			}
			p := filepath.Join(t.TempDir(), "m.yaml")
			if err := os.WriteFile(p, []byte(strings.Replace(orig, tt.old, tt.new, 1)), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(bin, p).CombinedOutput()
			if err == nil {
				t.Fatalf("validator accepted the mutated manifest:\n%s", out)
			}
			if !strings.Contains(string(out), tt.wantErr) {
				t.Fatalf("validator output lacks %q:\n%s", tt.wantErr, out)
			}
		})
	}
}

// TestManifestConfig runs the agent's own config check on the ConfigMap's
// config.toml, so the DaemonSet ships a config the agent accepts.
func TestManifestConfig(t *testing.T) {
	agentBin := agentBinary(t)
	out, err := exec.Command(validatorBinary(t), "-print-config", "fanaudit/fanaudit-config/config.toml", manifestPath).Output()
	if err != nil {
		t.Fatalf("print config: %v", err)
	}
	cfg := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(cfg, out, 0o640); err != nil {
		t.Fatal(err)
	}
	res, err := exec.Command(agentBin, "check-config", "--config", cfg).CombinedOutput()
	if err != nil {
		t.Fatalf("fanaudit check-config on the ConfigMap's config.toml: %v\n%s", err, res)
	}
}

// TestHostRootLayout runs the agent the way the DaemonSet lays it out: in
// its own mount namespace, with the node's root bound read-only under a
// prefix (/host in the pod) and watched paths under that prefix. Events of
// processes outside, on the node's own paths, must be reported, with
// file.path carrying the prefix as docs/operations.md says.
func TestHostRootLayout(t *testing.T) {
	testutil.RequireRoot(t)
	unshare := requireTool(t, "unshare", "util-linux")
	bin := agentBinary(t)
	watched := testutil.TmpfsMount(t, "16m")
	out := testutil.TmpfsMount(t, "16m")
	// The bind of / lives only in the agent's namespace. Its mount point is
	// on a tmpfs the cleanup unmounts and never walks, so a bind that
	// leaked could not lead a recursive delete into the host's root.
	host := filepath.Join(testutil.TmpfsMount(t, "1m"), "host")
	if err := os.Mkdir(host, 0o755); err != nil {
		t.Fatal(err)
	}
	logFile := filepath.Join(out, "events.json")
	// state_dir on the test's own tmpfs: the host's /var/lib/fanaudit is
	// not the test's to write.
	cfg := fmt.Sprintf("paths = [%q]\nevents = [\"create\"]\nstate_dir = %q\n\n[[sinks]]\nname = \"file\"\ntype = \"file\"\n\n[sinks.file]\npath = %q\nmax_size_mb = 0\n",
		host+watched, filepath.Join(out, "state"), logFile)
	cfgPath := filepath.Join(out, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o640); err != nil {
		t.Fatal(err)
	}
	script := `set -e; mount --rbind / "$1"; mount -o remount,bind,ro "$1"; shift; exec "$@"`
	stderr := &lockedBuffer{}
	cmd := exec.Command(unshare, "--mount", "--propagation", "slave", "sh", "-c", script, "pod", host, bin, "run", "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = stderr, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	defer func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("agent output:\n%s", stderr.String())
		}
		if mounted(t, host) {
			t.Errorf("the bind of / leaked into the test's namespace at %s", host)
			exec.Command("umount", "-l", host).Run()
		}
	}()
	cw := &canaryWriter{t: t, dir: watched, prefix: host, file: logFile, exited: exited}
	cw.waitVisible("pod", false)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if waitErr != nil {
			t.Errorf("agent exit after SIGTERM: %v (want 0)", waitErr)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("agent did not exit within 60s of SIGTERM")
	}
}

// mounted reports whether something is mounted at dir in the test's own
// mount namespace.
func mounted(t *testing.T, dir string) bool {
	t.Helper()
	for _, l := range strings.Split(readFile(t, "/proc/self/mountinfo"), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}
