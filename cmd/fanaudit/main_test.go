package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runCmd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "c.toml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestUsageErrors(t *testing.T) {
	bad := writeFile(t, "paths = [\"/tmp\"]\n\n[capture]\nread_bufer = 1\n")
	tests := []struct {
		name string
		args []string
		want string // must appear in the single stderr line
	}{
		{"no command", nil, "missing command"},
		{"unknown command", []string{"frobnicate"}, `unknown command "frobnicate"`},
		{"watch no path", []string{"watch"}, "missing PATH"},
		{"watch bad events", []string{"watch", "--events", "open,bogus", "/tmp"}, "--events"},
		{"watch empty events", []string{"watch", "--events", "", "/tmp"}, "--events"},
		{"watch lost not a filter", []string{"watch", "--events", "events_lost", "/tmp"}, "--events"},
		{"watch bad exclude", []string{"watch", "--exclude", "[", "/tmp"}, "--exclude"},
		{"watch bad duration", []string{"watch", "--duration", "soon", "/tmp"}, "--duration"},
		{"watch negative duration", []string{"watch", "--duration=-1s", "/tmp"}, "--duration"},
		{"watch unknown flag", []string{"watch", "--follow", "/tmp"}, "--follow"},
		{"watch bad format", []string{"watch", "--format", "json", "/tmp"}, "--format"},
		{"watch missing flag value", []string{"watch", "/tmp", "--events"}, "--events"},
		{"watch missing path", []string{"watch", "/nonexistent/fanaudit"}, "/nonexistent/fanaudit"},
		{"run unknown flag", []string{"run", "--confg", "x"}, "--confg"},
		{"run extra arg", []string{"run", "x"}, `unexpected argument "x"`},
		{"run missing config", []string{"run", "--config", "/nonexistent/c.toml"}, "/nonexistent/c.toml"},
		{"run empty config flag", []string{"run", "--config="}, "--config"},
		{"check-config bad key", []string{"check-config", "--config", bad}, bad + ":4: key capture.read_bufer: unknown key"},
		{"version extra", []string{"version", "x"}, "version"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := runCmd(t, tc.args...)
			if code != exitUsage {
				t.Errorf("exit %d, want 2 (stderr %q)", code, errs)
			}
			if out != "" {
				t.Errorf("stdout %q, want nothing", out)
			}
			if strings.Count(errs, "\n") != 1 || !strings.HasSuffix(errs, "\n") {
				t.Errorf("stderr is not exactly one line: %q", errs)
			}
			if !strings.Contains(errs, tc.want) {
				t.Errorf("stderr %q does not name %q", errs, tc.want)
			}
		})
	}
}

func TestCheckConfig(t *testing.T) {
	good := writeFile(t, "paths = [\"/tmp\"]\n[[sinks]]\nname = \"f\"\ntype = \"file\"\n[sinks.file]\npath = \"/var/log/x.json\"\n[[sinks]]\nname = \"k\"\ntype = \"kafka\"\n[sinks.kafka]\nbrokers = [\"b:9092\"]\ntopic = \"t\"\n[sinks.kafka.sasl]\nmechanism = \"plain\"\nusername = \"u\"\npassword_env = \"PW\"\n")
	code, out, errs := runCmd(t, "check-config", "--config", good)
	if code != 0 || errs != "" {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
	for _, want := range []string{`paths = ["/tmp"]`, "[[sinks]]", `path = "/var/log/x.json"`, `topic = "t"`, "shutdown_timeout", `password_env = "PW"`} {
		if !strings.Contains(out, want) {
			t.Errorf("effective config lacks %q:\n%s", want, out)
		}
	}
	// The printed config must itself be a valid config.
	again := writeFile(t, out)
	if code, _, errs := runCmd(t, "check-config", "--config", again); code != 0 {
		t.Errorf("effective config does not parse back: %s", errs)
	}
}

func TestVersionAndHelp(t *testing.T) {
	code, out, _ := runCmd(t, "version")
	if code != 0 || !strings.HasPrefix(out, "fanaudit ") {
		t.Errorf("version: %d %q", code, out)
	}
	code, out, _ = runCmd(t, "--help")
	if code != 0 || !strings.Contains(out, "fanaudit watch") {
		t.Errorf("help: %d %q", code, out)
	}
}

func TestParseFlagsInterleaved(t *testing.T) {
	fs := newFlagSet("watch")
	d := fs.Duration("duration", 0, "")
	var ex listFlag
	fs.Var(&ex, "exclude", "")
	pos, err := parseFlags("watch", fs, []string{"/a", "--duration", "2s", "/b", "--exclude", "x", "--exclude=y", "--", "--c"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(pos, " ") != "/a /b --c" || d.String() != "2s" || ex.String() != "x,y" {
		t.Errorf("pos %v duration %v exclude %v", pos, *d, ex)
	}
}
