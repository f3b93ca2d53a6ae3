package deploy_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const unitPath = "systemd/fanaudit.service"

// verifyUnit runs systemd-analyze verify on a copy of unit whose binary path
// is replaced by bin: verify insists that ExecStart exists, and the unit
// names the installed path, which a test machine does not have.
func verifyUnit(t *testing.T, unit, from, bin string) {
	t.Helper()
	sa := requireTool(t, "systemd-analyze", "systemd")
	if !strings.Contains(unit, from) {
		t.Fatalf("unit does not mention %s", from)
	}
	copyPath := filepath.Join(t.TempDir(), "fanaudit.service")
	if err := os.WriteFile(copyPath, []byte(strings.ReplaceAll(unit, from, bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sa, "verify", copyPath).CombinedOutput()
	// verify exits 0 on unknown keys and bad values it ignores; any output
	// means systemd would run something other than what the file says.
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	// The exposure score guards the hardening against quiet regressions;
	// 3.x is what the shipped settings give, 10 is "UNSAFE".
	out, err = exec.Command(sa, "security", "--offline=yes", "--threshold=40", copyPath).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: exposure above 4.0 (%v)\n%s", err, out)
	}
}

func TestUnitVerifies(t *testing.T) {
	unit := readFile(t, unitPath)
	stand, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	verifyUnit(t, unit, "/usr/local/bin/fanaudit", stand)
}

// TestUnitSettings pins what the issue and docs/operations.md promise about
// the unit, so that an edit cannot drop a hardening setting unnoticed.
func TestUnitSettings(t *testing.T) {
	unit := readFile(t, unitPath)
	tests := []struct {
		key  string
		want string
	}{
		{"Type", "exec"},
		{"ExecStart", "/usr/local/bin/fanaudit run --config /etc/fanaudit/config.toml"},
		{"ExecReload", "/bin/kill -HUP $MAINPID"},
		{"Restart", "on-failure"},
		{"RestartPreventExitStatus", "2"},
		{"KillSignal", "SIGTERM"},
		{"CapabilityBoundingSet", "CAP_SYS_ADMIN CAP_DAC_READ_SEARCH CAP_SYS_PTRACE CAP_SYS_NICE"},
		{"AmbientCapabilities", ""},
		{"NoNewPrivileges", "yes"},
		{"ProtectSystem", "strict"},
		{"ReadWritePaths", "/var/log/fanaudit /var/lib/fanaudit"},
		{"LogsDirectory", "fanaudit"},
		{"StateDirectory", "fanaudit"},
		{"ProtectHome", "read-only"},
		{"PrivateTmp", "no"},
		{"PrivateDevices", "yes"},
		{"ProtectKernelTunables", "yes"},
		{"ProtectKernelModules", "yes"},
		{"ProtectControlGroups", "yes"},
		{"RestrictSUIDSGID", "yes"},
		{"MemoryDenyWriteExecute", "yes"},
		{"WantedBy", "multi-user.target"},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			got := unitValues(unit, tt.key)
			if len(got) != 1 || got[0] != tt.want {
				t.Errorf("%s = %q, want exactly one %q", tt.key, got, tt.want)
			}
		})
	}
	t.Run("SystemCallFilter", func(t *testing.T) {
		got := unitValues(unit, "SystemCallFilter")
		if len(got) != 1 {
			t.Fatalf("SystemCallFilter = %q, want one line", got)
		}
		calls := strings.Fields(got[0])
		// fanotify and handle calls are outside @system-service; without them
		// the agent dies with EPERM at start.
		for _, c := range []string{"@system-service", "fanotify_init", "fanotify_mark", "open_by_handle_at", "name_to_handle_at"} {
			if !slices.Contains(calls, c) {
				t.Errorf("SystemCallFilter lacks %s", c)
			}
		}
	})
}

// unitCapabilities is the unit's capability set in setpriv's spelling.
func unitCapabilities(t *testing.T) []string {
	t.Helper()
	v := unitValues(readFile(t, unitPath), "CapabilityBoundingSet")
	if len(v) != 1 {
		t.Fatalf("CapabilityBoundingSet = %q", v)
	}
	var caps []string
	for _, c := range strings.Fields(v[0]) {
		caps = append(caps, strings.ToLower(strings.TrimPrefix(c, "CAP_")))
	}
	return caps
}
