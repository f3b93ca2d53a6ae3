package audit

import (
	"context"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fanaudit/fanaudit/internal/kernel"
	"github.com/fanaudit/fanaudit/internal/testutil"
)

var (
	drainN   = flag.Int("drain", 0, "TestDrainRate: run the drain measurement with this many wl files (e.g. 100000)")
	benchSrc = flag.String("bench-src", "/work/shared/bench", "directory with wl.c and fanread.c")
)

// TestDrainRate measures, by hand and as root, how fast the reader drains
// a pre-filled queue, beside the C reference reader in the same run:
//
//	go test ./audit -run TestDrainRate -v -args -drain 100000
//
// One wl run fills three unlimited queues on one tmpfs: fanread -m
// dfid_name -D -u, a bare kernel.Group read+Decode loop, and a full
// Capture (decode, resolve, split, filter). Nothing is asserted.
func TestDrainRate(t *testing.T) {
	if *drainN == 0 {
		t.Skip("run with -args -drain N")
	}
	testutil.RequireRoot(t)
	bin := t.TempDir()
	for _, p := range []string{"wl", "fanread"} {
		out, err := exec.Command("cc", "-O2", "-Wall", "-o", filepath.Join(bin, p), filepath.Join(*benchSrc, p+".c")).CombinedOutput()
		if err != nil {
			t.Fatalf("cc %s: %v: %s", p, err, out)
		}
	}
	root := testutil.TmpfsMount(t, "2g")
	wl := func(dir string) string {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(filepath.Join(bin, "wl"), dir, itoa(*drainN)).Output()
		if err != nil {
			t.Fatalf("wl: %v", err)
		}
		return strings.TrimSpace(string(out))
	}
	wl(filepath.Join(root, "warm")) // touch guest memory before timing

	// fanread in the mode the issue names, and in the mode that reports
	// the same records as the capture (DFID_NAME + FID), for scale.
	type reader struct {
		mode string
		cmd  *exec.Cmd
		out  strings.Builder
	}
	var readers []*reader
	for _, mode := range []string{"dfid_name", "dfid_name_fid"} {
		ready := filepath.Join(bin, "ready-"+mode)
		r := &reader{mode: mode}
		r.cmd = exec.Command(filepath.Join(bin, "fanread"), "-m", mode, "-D", "-u", "-b", "262144", "-w", ready, root)
		r.cmd.Stdout = &r.out
		if err := r.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer r.cmd.Process.Kill()
		for i := 0; ; i++ {
			if _, err := os.Stat(ready); err == nil {
				break
			}
			if i > 5000 {
				t.Fatal("fanread never became ready")
			}
			time.Sleep(time.Millisecond) // a readiness file from another process: nothing to wait on
		}
		readers = append(readers, r)
	}

	actions := []Action{ActionCreate, ActionOpen, ActionModify,
		ActionCloseWrite, ActionCloseNowrite, ActionRename, ActionDelete}
	c, err := New(Options{Paths: []string{root}, UnlimitedQueue: true, Actions: actions}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	g, err := kernel.Init(kernel.InitClassNotif | kernel.InitReportDFIDNm | kernel.InitReportFID |
		kernel.InitReportTarget | kernel.InitUnlimitedQ)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	mask := markMask(setOf(actions), c.Features(), false)
	if err := g.Mark(kernel.MarkAdd|kernel.MarkFilesystem, mask, root); err != nil {
		t.Fatal(err)
	}

	t.Logf("workload: %s", wl(filepath.Join(root, "w")))

	// 1. Each fanread drains alone.
	for _, r := range readers {
		r.cmd.Process.Signal(syscall.SIGUSR1)
		if err := r.cmd.Wait(); err != nil {
			t.Fatalf("fanread: %v", err)
		}
		var res struct {
			Events    uint64  `json:"events"`
			DrainS    float64 `json:"drain_s"`
			DrainRate float64 `json:"drain_rate"`
			Bytes     uint64  `json:"bytes"`
		}
		if err := json.Unmarshal([]byte(r.out.String()), &res); err != nil {
			t.Fatalf("fanread output %q: %v", r.out.String(), err)
		}
		t.Logf("fanread -m %s -D -u: %d events (%d bytes) in %.3fs = %.0f ev/s",
			r.mode, res.Events, res.Bytes, res.DrainS, res.DrainRate)
	}

	// 2. Bare read + Decode.
	buf := make([]byte, DefaultReadBuffer)
	raw := make([]kernel.RawEvent, 0, 4096)
	var nraw, nbytes int
	start := time.Now()
	for {
		n, err := g.TryRead(buf)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		raw, err = kernel.Decode(raw[:0], buf[:n])
		if err != nil {
			t.Fatal(err)
		}
		nraw += len(raw)
		nbytes += n
	}
	d := time.Since(start)
	t.Logf("kernel.Group TryRead+Decode: %d events (%d bytes) in %.3fs = %.0f ev/s", nraw, nbytes, d.Seconds(), float64(nraw)/d.Seconds())

	// 3. The full Capture, drain mode (ctx already ended).
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	out := make(chan []Event, 1024)
	var emitted int
	consumed := make(chan struct{})
	go func() {
		for evs := range out {
			emitted += len(evs)
			for i := range evs {
				evs[i].Release()
			}
		}
		close(consumed)
	}()
	start = time.Now()
	if err := c.Run(ctx, out); err != nil {
		t.Fatal(err)
	}
	d = time.Since(start)
	close(out)
	<-consumed
	st := c.Stats()
	t.Logf("audit.Capture drain: %d kernel events (%d Events) in %.3fs = %.0f kernel ev/s, %.0f Events/s; stats %+v",
		st.KernelEvents, emitted, d.Seconds(), float64(st.KernelEvents)/d.Seconds(), float64(emitted)/d.Seconds(), st)
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}
