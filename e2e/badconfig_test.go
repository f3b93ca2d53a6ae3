package e2e

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/fanaudit/fanaudit/internal/testutil"
)

// TestBadInput: every bad config or flag exits 2 with exactly one stderr
// line naming the flag, or the key and its line. None of these needs root:
// they fail before anything touches the kernel.
func TestBadInput(t *testing.T) {
	cfg := func(body string) []string { return []string{"run", "--config", writeConfig(t, body)} }
	check := func(body string) []string { return []string{"check-config", "--config", writeConfig(t, body)} }
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"unknown key", cfg("paths = [\"/tmp\"]\nstats_intervall = \"1s\"\n"), []string{"stats_intervall", ":2:"}},
		{"unknown table key", cfg("[metrics]\nenabled = true\nlisten_addr = \"x\"\n"), []string{"metrics.listen_addr", ":3:"}},
		{"bad policy", cfg("[[sinks]]\nname = \"s\"\ntype = \"stdout\"\nwhen_full = \"drop_some\"\n"), []string{"sinks[0].when_full", ":4:"}},
		{"bad sink type", cfg("[[sinks]]\nname = \"s\"\ntype = \"syslog\"\n"), []string{"sinks[0].type", ":3:"}},
		{"file path relative", cfg("[[sinks]]\nname = \"f\"\ntype = \"file\"\n[sinks.file]\npath = \"out.json\"\n"), []string{"sinks[0].file.path", ":5:"}},
		{"file fsync", cfg("[[sinks]]\nname = \"f\"\ntype = \"file\"\n[sinks.file]\npath = \"/x\"\nfsync = \"sometimes\"\n"), []string{"sinks[0].file.fsync", ":6:"}},
		{"kafka no brokers", cfg("[[sinks]]\nname = \"k\"\ntype = \"kafka\"\n[sinks.kafka]\ntopic = \"t\"\n"), []string{"sinks[0].kafka.brokers"}},
		{"kafka lossy acks", cfg("[[sinks]]\nname = \"k\"\ntype = \"kafka\"\n[sinks.kafka]\nbrokers = [\"b:1\"]\ntopic = \"t\"\nrequired_acks = \"one\"\n"), []string{"sinks[0].kafka.required_acks", ":7:"}},
		{"bad duration", cfg("shutdown_timeout = \"forever\"\n"), []string{"shutdown_timeout", ":1:"}},
		{"bad type", cfg("paths = \"/tmp\"\n"), []string{"paths", ":1:"}},
		{"bad event", cfg("events = [\"open\", \"write\"]\n"), []string{"events", ":1:", `"write"`}},
		{"syntax", cfg("[capture\n"), []string{"config.toml:"}},
		{"check-config too", check("[logging]\nlevel = \"chatty\"\n"), []string{"logging.level", ":2:"}},
		{"watched path missing", cfg("\n\npaths = [\"/nonexistent/fanaudit-e2e\"]\n"), []string{"key paths", ":3:", "/nonexistent/fanaudit-e2e"}},
		{"missing file", []string{"run", "--config", "/nonexistent/fanaudit.toml"}, []string{"/nonexistent/fanaudit.toml"}},
		{"unknown flag", []string{"run", "--cfg", "x"}, []string{"--cfg"}},
		{"unknown command", []string{"start"}, []string{`"start"`}},
		{"watch bad events", []string{"watch", "--events", "opne", "/tmp"}, []string{"--events", `"opne"`}},
		{"watch bad duration", []string{"watch", "--duration", "5", "/tmp"}, []string{"--duration"}},
		{"watch no path", []string{"watch", "--events", "open"}, []string{"PATH"}},
		{"watch missing path", []string{"watch", "/nonexistent/dir"}, []string{"/nonexistent/dir"}},
		// Enrichment warns (no machine-id under etc_root) before the
		// capture finds the path missing: still one line.
		{"setup warning then config error", cfg("paths = [\"/nonexistent/fanaudit-e2e\"]\n[enrich]\netc_root = \"/nonexistent/etc\"\n"), []string{"key paths", ":1:"}},
		{"watch a file", []string{"watch", "/etc/passwd"}, []string{"/etc/passwd"}},
		// Issue #10: durations are strings; inline tables are checked like [tables].
		{"duration as integer", cfg("paths = [\"/tmp\"]\nstats_interval = 5\n"), []string{"key stats_interval", ":2:", `"5s"`}},
		{"inline bad policy", cfg("sinks = [\n  { name = \"s\", type = \"stdout\" },\n  { name = \"f\", type = \"file\", file = { path = \"/x\" }, when_full = \"drop_some\" },\n]\n"), []string{"sinks[1].when_full", ":3:"}},
		{"inline unknown key", cfg("[[sinks]]\nname = \"k\"\ntype = \"kafka\"\nkafka = { brokers = [\"b:1\"], topic = \"t\", spool = { dri = \"/x\" } }\n"), []string{"sinks[0].kafka.spool.dri", ":4:"}},
		// Issue #11: bad input.
		{"config is /dev/zero", []string{"run", "--config", "/dev/zero"}, []string{"/dev/zero", "larger than the limit of 1048576 bytes"}},
		{"relative spool dir", cfg("[[sinks]]\nname = \"k\"\ntype = \"kafka\"\n[sinks.kafka]\nbrokers = [\"127.0.0.1:9\"]\ntopic = \"t\"\n" + "spool = { dir = \"spool\" }\n"), []string{"key sinks[0].kafka.spool.dir", ":7:", "absolute"}},
		{"relative spool dir, check-config", check("[[sinks]]\nname = \"k\"\ntype = \"kafka\"\n[sinks.kafka]\nbrokers = [\"127.0.0.1:9\"]\ntopic = \"t\"\n" + "spool = { dir = \"spool\" }\n"), []string{"key sinks[0].kafka.spool.dir", ":7:", "absolute"}},
		{"relative dead letter file", cfg("[[sinks]]\nname = \"k\"\ntype = \"kafka\"\n[sinks.kafka]\nbrokers = [\"127.0.0.1:9\"]\ntopic = \"t\"\n" + "dead_letter_file = \"dead.json\"\n"), []string{"key sinks[0].kafka.dead_letter_file", ":7:"}},
		{"two file sinks on one path", cfg("[[sinks]]\nname = \"a\"\ntype = \"file\"\nfile.path = \"/var/log/fa.json\"\n[[sinks]]\nname = \"b\"\ntype = \"file\"\nfile.path = \"/var/log/fa.json\"\n"), []string{"key sinks[1].file.path", ":8:", "sinks[0].file.path"}},
		{"file path is a dead letter file", cfg("[[sinks]]\nname = \"a\"\ntype = \"file\"\nfile.path = \"/var/log/fa.json\"\n" + "[[sinks]]\nname = \"k\"\ntype = \"kafka\"\n[sinks.kafka]\nbrokers = [\"127.0.0.1:9\"]\ntopic = \"t\"\n" + "dead_letter_file = \"/var/log/fa.json\"\n"), []string{"key sinks[1].kafka.dead_letter_file", ":11:"}},
		{"two kafka sinks on one spool", cfg("[[sinks]]\nname = \"k\"\ntype = \"kafka\"\n[sinks.kafka]\nbrokers = [\"127.0.0.1:9\"]\ntopic = \"t\"\n" + "spool.dir = \"/var/spool/fa\"\n[[sinks]]\nname = \"k2\"\ntype = \"kafka\"\nkafka = { brokers = [\"127.0.0.1:9\"], topic = \"t\", spool = { dir = \"/var/spool/fa\" } }\n"), []string{"key sinks[1].kafka.spool.dir", ":11:"}},
		{"missing password file", cfg("[[sinks]]\nname = \"k\"\ntype = \"kafka\"\n[sinks.kafka]\nbrokers = [\"127.0.0.1:9\"]\ntopic = \"t\"\n" + "[sinks.kafka.sasl]\nmechanism = \"scram-sha-512\"\nusername = \"u\"\npassword_file = \"/nonexistent/fanaudit-pw\"\n"), []string{"key sinks[0].kafka.sasl.password_file", ":10:"}},
		{"missing ca file", cfg("[[sinks]]\nname = \"k\"\ntype = \"kafka\"\n[sinks.kafka]\nbrokers = [\"127.0.0.1:9\"]\ntopic = \"t\"\n" + "tls = { enabled = true, ca_file = \"/nonexistent/fanaudit-ca.pem\" }\n"), []string{"key sinks[0].kafka.tls.ca_file", ":7:"}},
		{"broker port 99999", cfg("[[sinks]]\nname = \"k\"\ntype = \"kafka\"\n[sinks.kafka]\nbrokers = [\"127.0.0.1:99999\"]\ntopic = \"t\"\n"), []string{"key sinks[0].kafka.brokers[0]", ":5:", "99999"}},
		{"memory limit 2^44", cfg("memory_limit_mb = 17592186044416\n"), []string{"key memory_limit_mb", ":1:"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := start(t, false, tc.args...)
			code := a.wait()
			errs := a.stderr()
			if code != 2 {
				t.Errorf("exit %d, want 2; stderr:\n%s", code, errs)
			}
			if strings.Contains(errs, "\n") || errs == "" {
				t.Errorf("want exactly one stderr line, got:\n%s", errs)
			}
			for _, w := range tc.want {
				if !strings.Contains(errs, w) {
					t.Errorf("stderr %q does not contain %q", errs, w)
				}
			}
		})
	}
}

// TestRuntimeFailure: a problem that only shows at run time (the metrics
// port is taken) is exit 1, not 2.
func TestRuntimeFailure(t *testing.T) {
	testutil.RequireRoot(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	watched := testutil.TmpfsMount(t, "1m")
	cfg := fmt.Sprintf("paths = [%q]\n[metrics]\nenabled = true\nlisten = %q\n", watched, ln.Addr().String())
	a := start(t, false, "run", "--config", runConfig(t, cfg))
	if code := a.wait(); code != 1 {
		t.Fatalf("exit %d, want 1; stderr:\n%s", code, a.stderr())
	}
	if !strings.Contains(a.stderr(), "metrics.listen") {
		t.Errorf("stderr does not name metrics.listen:\n%s", a.stderr())
	}
}
