package e2e

import (
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fanaudit/fanaudit/internal/testutil"
)

// TestUnmountHealth: a watched filesystem unmounted with umount -l is
// logged and turns /healthz to 503 naming the path; a new mount at the path
// is watched again, health recovers, and what happens on the new mount is
// recorded with exact paths, in a tree that was there before it was
// mounted (#12 case 8). Layouts: tmpfs (a new, empty one), an ext4 loop
// image mounted again (a filesystem mark), and two the kernel gives no
// filesystem mark, watched with inode marks: a btrfs subvolume watched
// directly (EXDEV; its filesystem is unmounted and mounted again) and an
// overlayfs merged directory mounted again over the same layers
// (EOPNOTSUPP).
func TestUnmountHealth(t *testing.T) {
	testutil.RequireRoot(t)
	for _, kind := range []string{"tmpfs", "ext4", "btrfs-subvolume", "btrfs-subvol-mount", "overlayfs"} {
		t.Run(kind, func(t *testing.T) { unmountHealth(t, kind) })
	}
}

func unmountHealth(t *testing.T, kind string) {
	at, err := os.MkdirTemp("", "fanaudit-e2e-umount-") // unmounted and mounted again
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		exec.Command("umount", "-l", at).Run()
		os.Remove(at)
	})
	sh := func(dir, script string) {
		t.Helper()
		cmd := exec.Command("sh", "-ec", script)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", script, err, out)
		}
	}
	watched := at
	var mount func()
	switch kind {
	case "tmpfs":
		mount = func() { sh("/", "mount -t tmpfs -o size=8m tmpfs "+at) }
	case "ext4", "btrfs-subvolume":
		img := testutil.LoopImage(t, strings.TrimSuffix(kind, "-subvolume"), 128<<20)
		mount = func() { sh("/", "mount -o loop "+img+" "+at) }
		if kind == "btrfs-subvolume" {
			watched = filepath.Join(at, "sv")
		}
	case "btrfs-subvol-mount":
		// The filesystem stays mounted elsewhere; only the subvol= mount
		// at the path goes and comes back.
		base, err := os.MkdirTemp("", "fanaudit-e2e-btrfs-")
		if err != nil {
			t.Fatal(err)
		}
		sh("/", "mount -o loop "+testutil.LoopImage(t, "btrfs", 128<<20)+" "+base)
		t.Cleanup(func() {
			exec.Command("umount", base).Run()
			os.Remove(base)
		})
		sh(base, "btrfs -q subvolume create sv")
		dev, err := exec.Command("findmnt", "-no", "SOURCE", base).Output()
		if err != nil {
			t.Fatal(err)
		}
		src, _, _ := strings.Cut(strings.TrimSpace(string(dev)), "[")
		mount = func() { sh("/", "mount -o subvol=sv "+src+" "+at) }
	case "overlayfs":
		base := testutil.TmpfsMount(t, "16m")
		sh(base, "mkdir lower upper work")
		mount = func() {
			sh(base, "mount -t overlay overlay -o lowerdir="+base+"/lower,upperdir="+base+"/upper,workdir="+base+"/work "+at)
		}
	}
	mount()
	if kind == "btrfs-subvolume" {
		sh(at, "btrfs -q subvolume create sv")
	}
	persists := kind != "tmpfs" // the new mount shows the same tree
	if persists {
		sh(watched, "mkdir -p pre/a && echo x > pre/a/f")
	}
	outDir := testutil.TmpfsMount(t, "16m")
	out := filepath.Join(outDir, "events.json")
	cfg := fileSinkConfig(watched, out, "") + "\n[metrics]\nenabled = true\nlisten = \"127.0.0.1:0\"\n"
	a := start(t, false, "run", "--config", runConfig(t, cfg))
	a.waitLog("running", startTimeout)
	closeWritten := func(p string) func(map[string]any) bool {
		return func(m map[string]any) bool {
			return leaf(m, "event.action") == "close_write" && leaf(m, "file.path") == p
		}
	}
	code, body := healthz(t, a)
	if code != http.StatusOK {
		t.Fatalf("/healthz at start: %d %s", code, body)
	}
	sh(watched, "echo x > before")
	waitRecord(t, a, out, closeWritten(filepath.Join(watched, "before")))

	sh("/", "umount -l "+at)
	// Health changes before the line that announces it.
	a.waitLog("watched filesystem unmounted: nothing there is seen until something is mounted at the path again", startTimeout)
	code, body = healthz(t, a)
	var h struct{ Status, Reason string }
	if err := json.Unmarshal([]byte(body), &h); err != nil {
		t.Fatalf("/healthz: %v: %q", err, body)
	}
	if code != http.StatusServiceUnavailable || h.Status != "unhealthy" || !strings.Contains(h.Reason, watched) {
		t.Errorf("/healthz after umount: %d %+v", code, h)
	}
	mount()
	a.waitLog("a filesystem was mounted at a watched path: watched again", startTimeout)
	code, body = healthz(t, a)
	if code != http.StatusOK {
		t.Errorf("/healthz after a new mount: %d %s", code, body)
	}
	want := []string{"create ./after", "close_write ./after"}
	if persists {
		sh(watched, "echo y >> pre/a/f && mv pre/a/f pre/g && rm pre/g && rmdir pre/a")
		want = append(want, "close_write ./pre/a/f", "rename ./pre/g <- ./pre/a/f", "delete ./pre/g", "delete ./pre/a")
	}
	sh(watched, "echo z > after")
	waitRecord(t, a, out, closeWritten(filepath.Join(watched, "after")))
	a.stop()

	data := readFile(t, out)
	recs := parseRecords(t, data)
	checkGapless(t, recs)
	// The records after the first mount's: every one named, exactly the
	// operations on the new mount. Held events go out just before the
	// record that names them (see audit/names.go), so the order of these
	// may differ from the kernel's: compared as sets.
	var got []string
	after := false
	for _, r := range recs {
		if !after {
			after = r.Event.Action == "close_write" && r.File.Path == filepath.Join(watched, "before")
			continue
		}
		if r.File.Path == "" {
			t.Errorf("record without file.path: %+v", r)
		}
		s := r.Event.Action + " ." + strings.TrimPrefix(r.File.Path, watched)
		if o := r.File.Ext.Original.Path; o != "" {
			s += " <- ." + strings.TrimPrefix(o, watched)
		}
		got = append(got, s)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("records on the new mount:\n got %q\nwant %q\n%s", got, want, data)
	}
}
