package main

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/fanaudit/fanaudit/internal/config"
	"github.com/fanaudit/fanaudit/internal/record"
	"github.com/fanaudit/fanaudit/sinks"
	"github.com/fanaudit/fanaudit/sinks/kafka"
)

// TestDefaultsMatchStages: the config's documented defaults map to the
// defaults the stage packages would pick themselves.
func TestDefaultsMatchStages(t *testing.T) {
	f := config.DefaultFileSink()
	if got, want := fileOptions(&f), sinks.DefaultFileOptions(); got != want {
		t.Errorf("file defaults:\n got %+v\nwant %+v", got, want)
	}
	k := config.DefaultKafkaSink()
	got, want := kafkaConfig(&k), kafka.Defaults()
	got.Brokers, want.Brokers = nil, nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("kafka defaults:\n got %+v\nwant %+v", got, want)
	}
	if _, err := sinks.ParsePolicy(config.DefaultSink("s", config.SinkStdout).WhenFull); err != nil {
		t.Error(err)
	}
}

// TestEventActionsMatchRecord: config accepts exactly the file actions
// the record package knows.
func TestEventActionsMatchRecord(t *testing.T) {
	var want []string
	for _, a := range record.FileActions() {
		want = append(want, a.String())
	}
	got := config.EventActions()
	if strings.Join(sorted(got), ",") != strings.Join(sorted(want), ",") {
		t.Errorf("config accepts %v, record has %v", got, want)
	}
	cfg := config.Default()
	cfg.Events = got
	if n := len(eventActions(&cfg)); n != len(got) {
		t.Errorf("mapped %d of %d actions", n, len(got))
	}
}

func sorted(s []string) []string {
	s = append([]string(nil), s...)
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s
}

func TestOutputGlobs(t *testing.T) {
	c, err := config.Parse("t.toml", []byte("[[sinks]]\nname = \"f\"\ntype = \"file\"\nfile = { path = \"/var/log/x.json\" }\n"))
	if err != nil {
		t.Fatal(err)
	}
	globs := outputGlobs(c)
	if len(globs) != 1 {
		t.Fatalf("outputGlobs = %v", globs)
	}
	for _, tc := range []struct {
		path string
		want bool
	}{
		{"/var/log/x.json.20261122T010203Z", true},
		{"/var/log/x.json.20261122T010203Z.gz", true},
		{"/var/log/x.json", false},
		{"/var/log/xyjson.1", false},
	} {
		if got, _ := filepath.Match(globs[0], tc.path); got != tc.want {
			t.Errorf("%s matches %s: %v", globs[0], tc.path, got)
		}
	}
	if g := escapeGlob("/a[1]/*?\\"); g != `/a\[1\]/\*\?\\` {
		t.Errorf("escapeGlob = %s", g)
	}
}

// TestRunConfigFileErrors: files a config only names (password, CA,
// certificate, key) are checked before run sets anything up, and a
// missing or bad one is a config error: exit 2, one line, key and line.
func TestRunConfigFileErrors(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.pem")
	if err := os.WriteFile(junk, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	head := "paths = [\"/tmp\"]\n[[sinks]]\nname = \"k\"\ntype = \"kafka\"\n[sinks.kafka]\nbrokers = [\"127.0.0.1:9\"]\ntopic = \"t\"\n" // 7 lines
	tests := []struct {
		name, body, want string
	}{
		{"missing password file", "sasl = { mechanism = \"plain\", username = \"u\", password_file = \"/nonexistent/pw\" }\n", ":8: key sinks[0].kafka.sasl.password_file"},
		{"empty password file", "sasl = { mechanism = \"scram-sha-512\", username = \"u\", password_file = \"" + empty + "\" }\n", ":8: key sinks[0].kafka.sasl.password_file"},
		{"unset password env", "[sinks.kafka.sasl]\nmechanism = \"plain\"\nusername = \"u\"\npassword_env = \"FANAUDIT_TEST_UNSET_PW\"\n", ":11: key sinks[0].kafka.sasl.password_env"},
		{"missing ca", "tls = { enabled = true, ca_file = \"/nonexistent/ca.pem\" }\n", ":8: key sinks[0].kafka.tls.ca_file"},
		{"ca not pem", "[sinks.kafka.tls]\nenabled = true\nca_file = \"" + junk + "\"\n", ":10: key sinks[0].kafka.tls.ca_file"},
		{"missing key", "tls = { enabled = true, cert_file = \"" + junk + "\", key_file = \"/nonexistent/k.pem\" }\n", ":8: key sinks[0].kafka.tls.key_file"},
		{"bad pair", "tls = { enabled = true, cert_file = \"" + junk + "\", key_file = \"" + junk + "\" }\n", ":8: key sinks[0].kafka.tls.cert_file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := runCmd(t, "run", "--config", writeFile(t, head+tc.body))
			if code != exitUsage || out != "" {
				t.Errorf("exit %d, stdout %q; want 2 and nothing", code, out)
			}
			if strings.Count(errs, "\n") != 1 || !strings.Contains(errs, tc.want) {
				t.Errorf("stderr %q, want one line with %q", errs, tc.want)
			}
			// check-config does not look for the files (another machine).
			if code, _, errs := runCmd(t, "check-config", "--config", writeFile(t, head+tc.body)); code != 0 {
				t.Errorf("check-config: exit %d: %s", code, errs)
			}
		})
	}
}

// TestCheckAndRunAgree: what check-config rejects, run rejects with the
// same line, before touching anything.
func TestCheckAndRunAgree(t *testing.T) {
	for _, body := range []string{
		"[[sinks]]\nname = \"k\"\ntype = \"kafka\"\nkafka = { brokers = [\"b:1\"], topic = \"t\", spool = { dir = \"spool\" } }\n",
		"[[sinks]]\nname = \"k\"\ntype = \"kafka\"\n[sinks.kafka]\nbrokers = [\"b:1\"]\ntopic = \"t\"\ndead_letter_file = \"dead.json\"\n",
		"stats_interval = 5\n",
	} {
		file := writeFile(t, body)
		c1, _, e1 := runCmd(t, "check-config", "--config", file)
		c2, _, e2 := runCmd(t, "run", "--config", file)
		if c1 != exitUsage || c2 != exitUsage || e1 != e2 {
			t.Errorf("check-config %d %q, run %d %q", c1, e1, c2, e2)
		}
	}
}

// TestCheckConfigShowsNoSecret: the effective config names where the
// password comes from, never the password.
func TestCheckConfigShowsNoSecret(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("hunter2-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("FANAUDIT_TEST_PW", "hunter2-env")
	body := "[[sinks]]\nname = \"k\"\ntype = \"kafka\"\nkafka = { brokers = [\"b:1\"], topic = \"t\", tls = { enabled = true }, sasl = { mechanism = \"plain\", username = \"u\", password_file = %q } }\n" +
		"[[sinks]]\nname = \"k2\"\ntype = \"kafka\"\nkafka = { brokers = [\"b:1\"], topic = \"t\", sasl = { mechanism = \"plain\", username = \"u\", password_env = \"FANAUDIT_TEST_PW\" } }\n"
	code, out, errs := runCmd(t, "check-config", "--config", writeFile(t, strings.Replace(body, "%q", `"`+pw+`"`, 1)))
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if strings.Contains(out, "hunter2") || !strings.Contains(out, pw) || !strings.Contains(out, "FANAUDIT_TEST_PW") {
		t.Errorf("effective config:\n%s", out)
	}
}

// TestPlainWithoutTLSWarns: one warning per sink that sends a PLAIN
// password in clear text, none otherwise.
func TestPlainWithoutTLSWarns(t *testing.T) {
	body := "[[sinks]]\nname = \"clear\"\ntype = \"kafka\"\nkafka = { brokers = [\"b:1\"], topic = \"t\", sasl = { mechanism = \"plain\", username = \"u\", password_env = \"X\" } }\n" +
		"[[sinks]]\nname = \"tls\"\ntype = \"kafka\"\nkafka = { brokers = [\"b:1\"], topic = \"t\", tls = { enabled = true }, sasl = { mechanism = \"plain\", username = \"u\", password_env = \"X\" } }\n" +
		"[[sinks]]\nname = \"scram\"\ntype = \"kafka\"\nkafka = { brokers = [\"b:1\"], topic = \"t\", sasl = { mechanism = \"scram-sha-256\", username = \"u\", password_env = \"X\" } }\n"
	c, err := config.Parse("t.toml", []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	warnConfig(c, zerolog.New(&buf))
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], `"sink":"clear"`) || !strings.Contains(lines[0], "PLAIN") {
		t.Errorf("warnings: %q", buf.String())
	}
}

// TestStageRejectionNamesKey: a value the config accepts but a stage
// rejects (a spool segment too small for one message plus framing)
// still names the key and its line.
func TestStageRejectionNamesKey(t *testing.T) {
	body := "[[sinks]]\nname = \"k\"\ntype = \"kafka\"\n[sinks.kafka]\nbrokers = [\"b:1\"]\ntopic = \"t\"\nmax_message_bytes = 1048576\n[sinks.kafka.spool]\nsegment_bytes = 1048576\nmax_bytes = 4194304\n"
	code, _, errs := runCmd(t, "check-config", "--config", writeFile(t, body))
	if code != exitUsage || strings.Count(errs, "\n") != 1 || !strings.Contains(errs, ":9: key sinks[0].kafka.spool.segment_bytes:") {
		t.Errorf("exit %d, stderr %q", code, errs)
	}
}
