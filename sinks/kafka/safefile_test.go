package kafka

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/fanaudit/fanaudit/internal/safefile"
	"github.com/fanaudit/fanaudit/internal/testutil"
	"github.com/fanaudit/fanaudit/sinks"
)

// The attacker of these tests is nobody (65534), acting through setpriv
// on a private tmpfs; the agent runs as root.

const nobodyID = 65534

func attackMount(t *testing.T) string {
	t.Helper()
	m := testutil.TmpfsMount(t, "16m")
	if err := os.Chmod(m, 0o755); err != nil {
		t.Fatal(err)
	}
	return m
}

func nobodyDo(t *testing.T, argv ...string) {
	t.Helper()
	args := append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", "--"}, argv...)
	if out, err := exec.Command("setpriv", args...).CombinedOutput(); err != nil {
		t.Fatalf("as nobody %v: %v: %s", argv, err, out)
	}
}

func victimFile(t *testing.T, path string) func() {
	t.Helper()
	want := []byte("root:secret\n")
	if err := os.WriteFile(path, want, 0o600); err != nil {
		t.Fatal(err)
	}
	return func() {
		t.Helper()
		got, err := os.ReadFile(path)
		fi, lerr := os.Lstat(path)
		if err != nil || lerr != nil || !bytes.Equal(got, want) || fi.Mode() != 0o600 {
			t.Errorf("victim %s changed: %q %v %v", path, got, err, lerr)
		}
	}
}

func wantKeyRefusal(t *testing.T, err error, key, substr string) {
	t.Helper()
	if !errors.Is(err, safefile.ErrUnsafe) || !strings.HasPrefix(err.Error(), key+": ") || !strings.Contains(err.Error(), substr) {
		t.Fatalf("err = %v, want a refusal naming %s saying %q", err, key, substr)
	}
}

// TestDeadLetterLink: a link nobody planted at dead_letter_file (in a
// sticky root-owned directory, like /tmp) is refused; the victim stays.
// A dead-letter file deleted under the sink is created anew.
func TestDeadLetterLink(t *testing.T) {
	m := attackMount(t)
	dir := filepath.Join(m, "dl")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, os.ModeSticky|0o777); err != nil {
		t.Fatal(err)
	}
	check := victimFile(t, filepath.Join(m, "victim"))
	defer check()
	path := filepath.Join(dir, "dead.jsonl")
	nobodyDo(t, "ln", "-s", filepath.Join(m, "victim"), path)
	_, err := openDeadLetters(path, "t")
	wantKeyRefusal(t, err, "dead_letter_file", "symbolic link")

	c := Defaults()
	c.Brokers, c.Topic, c.DeadLetterFile = []string{"127.0.0.1:1"}, "t", path
	_, err = New(c, testHost, "r", zerolog.Nop())
	wantKeyRefusal(t, err, "dead_letter_file", "symbolic link")

	// Swapped: the file is moved away and nobody plants a link at the
	// path before the SIGHUP. The reopen is refused, and dead letters go
	// on into the moved file.
	swapped := filepath.Join(dir, "swapped.jsonl")
	sd, err := openDeadLetters(swapped, "t")
	if err != nil {
		t.Fatal(err)
	}
	defer sd.close()
	if err := os.Rename(swapped, swapped+".1"); err != nil {
		t.Fatal(err)
	}
	nobodyDo(t, "ln", "-s", filepath.Join(m, "victim"), swapped)
	wantKeyRefusal(t, sd.reopen(), "dead_letter_file", "symbolic link")
	if err := sd.write("id0", nil, []byte(`{"a":0}`), errors.New("too big")); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(swapped + ".1"); err != nil || !strings.Contains(string(b), `"event_id":"id0"`) {
		t.Fatalf("dead letter after the swap: %q %v", b, err)
	}

	// Deleted under the sink: the next dead letter goes to a new file.
	good := filepath.Join(m, "good", "dead.jsonl") // the directory is created 0700
	d, err := openDeadLetters(good, "t")
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	if fi, err := os.Stat(filepath.Dir(good)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("created directory: %v %v", fi.Mode(), err)
	}
	if err := d.write("id1", nil, []byte(`{"a":1}`), errors.New("too big")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(good); err != nil {
		t.Fatal(err)
	}
	if err := d.write("id2", nil, []byte(`{"a":2}`), errors.New("too big")); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(good)
	if err != nil || !strings.Contains(string(b), `"event_id":"id2"`) || strings.Contains(string(b), "id1") {
		t.Fatalf("dead letters after delete: %q %v", b, err)
	}
}

// TestSpoolForged: a spool directory nobody made (or a segment nobody
// owns, or a link, in root's spool directory) is refused with an error
// naming spool.dir; nothing of it is read, so nothing forged can reach
// Kafka.
func TestSpoolForged(t *testing.T) {
	m := attackMount(t)
	// A genuine segment, to forge from.
	genuine := filepath.Join(m, "genuine")
	s, err := openSpool(testSpoolCfg(genuine), sinks.Block, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.append(context.Background(), recs(0, 3)); err != nil {
		t.Fatal(err)
	}
	if err := s.close(); err != nil {
		t.Fatal(err)
	}
	segs, err := filepath.Glob(filepath.Join(genuine, "seg-*.log"))
	if err != nil || len(segs) != 1 {
		t.Fatalf("segments %v %v", segs, err)
	}
	seg, err := os.ReadFile(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(genuine); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("spool dir mode %v %v", fi.Mode(), err)
	}

	// nobody pre-creates the spool directory (its parent is a sticky
	// root-owned one, like /tmp) and puts a forged segment in it.
	shared := filepath.Join(m, "shared")
	if err := os.Mkdir(shared, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(shared, os.ModeSticky|0o777); err != nil {
		t.Fatal(err)
	}
	byNobody := filepath.Join(shared, "spool")
	nobodyDo(t, "mkdir", "-m", "0700", byNobody)
	forged := filepath.Join(byNobody, filepath.Base(segs[0]))
	nobodyDo(t, "sh", "-c", `umask 077; cat > "$1"`, "sh", forged)
	if err := os.WriteFile(forged, seg, 0o600); err != nil { // the forged bytes: a valid segment
		t.Fatal(err)
	}

	// Root's own spool directory, but a segment owned by nobody.
	rootDir := filepath.Join(m, "root")
	if err := os.Mkdir(rootDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootDir, filepath.Base(segs[0])), seg, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(filepath.Join(rootDir, filepath.Base(segs[0])), nobodyID, nobodyID); err != nil {
		t.Fatal(err)
	}

	// Root's own spool directory holding a link to a segment elsewhere.
	linkDir := filepath.Join(m, "link")
	if err := os.Mkdir(linkDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(segs[0], filepath.Join(linkDir, "seg-00000000000000000009.log")); err != nil {
		t.Fatal(err)
	}

	// A group-writable spool directory.
	groupDir := filepath.Join(m, "group")
	if err := os.Mkdir(groupDir, 0o770); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(groupDir, 0o770); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct{ dir, want string }{
		{byNobody, "owned by uid 65534"},
		{rootDir, "owned by uid 65534"},
		{linkDir, "symbolic link"},
		{groupDir, "must not be writable by group or others"},
	} {
		_, err := openSpool(testSpoolCfg(tc.dir), sinks.Block, nil)
		wantKeyRefusal(t, err, "spool.dir", tc.want)

		c := Defaults()
		c.Brokers, c.Topic = []string{"127.0.0.1:1"}, "t"
		c.Spool.Dir = tc.dir
		_, err = New(c, testHost, "r", zerolog.Nop())
		wantKeyRefusal(t, err, "spool.dir", tc.want)
	}

	// A spool directory the agent creates itself under the sticky one
	// is its own (0700) and is accepted.
	s, err = openSpool(testSpoolCfg(filepath.Join(shared, "fresh")), sinks.Block, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.close()
}
