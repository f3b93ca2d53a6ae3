package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/fanaudit/fanaudit/internal/testutil"
)

// TestUnmountHealth: a watched filesystem unmounted with umount -l is
// logged and turns /healthz to 503 naming the path; a new mount at the path
// is watched again and health recovers (#12 case 8).
func TestUnmountHealth(t *testing.T) {
	testutil.RequireRoot(t)
	watched, err := os.MkdirTemp("", "fanaudit-e2e-umount-")
	if err != nil {
		t.Fatal(err)
	}
	mount := func() {
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", watched).CombinedOutput(); err != nil {
			t.Fatalf("mount: %v: %s", err, out)
		}
	}
	mount()
	t.Cleanup(func() {
		exec.Command("umount", "-l", watched).Run()
		os.Remove(watched)
	})
	outDir := testutil.TmpfsMount(t, "16m")
	cfg := fileSinkConfig(watched, filepath.Join(outDir, "events.json"), "") + "\n[metrics]\nenabled = true\nlisten = \"127.0.0.1:0\"\n"
	a := start(t, false, "run", "--config", writeConfig(t, cfg))
	serving := a.waitLog("serving /metrics and /healthz", startTimeout)
	a.waitLog("running", startTimeout)
	base := fmt.Sprintf("http://%s", serving["listen"])
	health := func() (h struct{ Status, Reason string }) {
		if err := json.Unmarshal([]byte(httpGet(t, base+"/healthz")), &h); err != nil {
			t.Fatal(err)
		}
		return h
	}
	if h := health(); h.Status != "ok" {
		t.Fatalf("/healthz at start: %+v", h)
	}
	if out, err := exec.Command("umount", "-l", watched).CombinedOutput(); err != nil {
		t.Fatalf("umount: %v: %s", err, out)
	}
	a.waitLog("watched filesystem unmounted: nothing there is seen until something is mounted at the path again", startTimeout)
	if h := health(); h.Status == "ok" || !strings.Contains(h.Reason, watched) {
		t.Errorf("/healthz after umount: %+v", h)
	}
	mount()
	a.waitLog("a filesystem was mounted at a watched path: watched again", startTimeout)
	if h := health(); h.Status != "ok" {
		t.Errorf("/healthz after a new mount: %+v", h)
	}
	a.signal(syscall.SIGTERM)
	if code := a.wait(); code != 0 {
		t.Fatalf("exit %d: %s", code, a.stderr())
	}
}
