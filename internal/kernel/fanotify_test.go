package kernel

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/fanaudit/fanaudit/internal/testutil"
)

var capture = flag.Bool("capture", false, "write the buffers TestRealReads reads to testdata/fuzz/FuzzDecode")

// readSeed reads one file of the fuzz corpus format (go test fuzz v1).
func readSeed(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 8<<20)
	if !sc.Scan() || sc.Text() != "go test fuzz v1" || !sc.Scan() {
		return nil, fmt.Errorf("%s: not a fuzz corpus file", path)
	}
	l := sc.Text()
	if !strings.HasPrefix(l, "[]byte(") || !strings.HasSuffix(l, ")") {
		return nil, fmt.Errorf("%s: not a []byte seed", path)
	}
	s, err := strconv.Unquote(l[len("[]byte(") : len(l)-1])
	return []byte(s), err
}

func writeSeed(t *testing.T, name string, buf []byte) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	data := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", buf)
	if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// drain reads everything queued, one buffer per read.
func drain(t *testing.T, g *Group, size int) [][]byte {
	var out [][]byte
	for {
		buf := make([]byte, size)
		n, err := g.TryRead(buf)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return out
		}
		out = append(out, buf[:n])
	}
}

func fileOps(t *testing.T, root string) {
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	j := func(p string) string { return filepath.Join(root, p) }
	must(os.Mkdir(j("d"), 0o755))
	must(os.WriteFile(j("d/f"), []byte("data"), 0o644))
	_, err := os.ReadFile(j("d/f"))
	must(err)
	must(os.Chmod(j("d/f"), 0o600))
	must(os.Rename(j("d/f"), j("g")))
	must(os.Mkdir(j("d/e"), 0o755))
	must(os.Rename(j("d"), j("d2")))
	must(os.WriteFile(j("d2/e/\xff\\name"), nil, 0o644))
	must(os.Remove(j("d2/e/\xff\\name")))
	must(os.Remove(j("g")))
	must(os.Remove(j("d2/e")))
	must(os.Chown(j("d2"), 1, 1))
	must(os.Remove(j("d2")))
}

// TestRealReads reads real kernel buffers from each group kind the agent
// uses, checks that they decode cleanly, and with -capture stores them as
// the FuzzDecode seed corpus.
func TestRealReads(t *testing.T) {
	testutil.RequireRoot(t)
	root := testutil.TmpfsMount(t, "64m")
	ft, err := Probe(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("features %+v", ft)
	if !ft.FID || !ft.Rename || !ft.TargetFID {
		t.Skip("kernel lacks FID reporting")
	}
	all := FanAccess | FanModify | FanAttrib | FanCloseWrite | FanCloseNowrite | FanOpen | FanCreate |
		FanDelete | FanDeleteSelf | FanMoveSelf | FanOpenExec | FanRename | FanOnDir
	groups := []struct {
		name  string
		flags uint
		mark  uint
		mask  uint64
	}{
		{"fid", InitClassNotif | InitReportDFIDNm | InitReportFID | InitReportTarget, MarkFilesystem, all},
		{"fid-pidfd", InitClassNotif | InitReportDFIDNm | InitReportFID | InitReportTarget | InitReportPidFD, MarkFilesystem, all},
		{"fd", InitClassNotif, MarkMount, fdModeBitsForTest},
	}
	for _, gc := range groups {
		t.Run(gc.name, func(t *testing.T) {
			g, err := Init(gc.flags)
			if err != nil {
				t.Fatal(err)
			}
			defer g.Close()
			if err := g.Mark(MarkAdd|gc.mark, gc.mask, root); err != nil {
				t.Fatal(err)
			}
			fileOps(t, root)
			bufs := drain(t, g, 4096)
			if len(bufs) == 0 {
				t.Fatal("no events")
			}
			var masks uint64
			for i, buf := range bufs {
				evs, err := Decode(nil, buf)
				if err != nil {
					t.Fatalf("buffer %d: %v", i, err)
				}
				for _, e := range evs {
					if e.Err != nil {
						t.Errorf("event %+v: %v", e, e.Err)
					}
					if e.FD >= 0 {
						CloseFD(e.FD)
					}
					if e.PidFD >= 0 {
						CloseFD(e.PidFD)
					}
					masks |= e.Mask
					if gc.name != "fd" && !e.Dir.Valid() && !e.FID.Valid() && !e.OldDir.Valid() {
						t.Errorf("FID event without a handle: %+v", e)
					}
					if e.Mask&FanRename != 0 && (!e.OldDir.Valid() || !e.NewDir.Valid()) {
						t.Errorf("rename without both names: %+v", e)
					}
				}
				if *capture {
					writeSeed(t, fmt.Sprintf("real-%s-%d", gc.name, i), buf)
				}
			}
			if gc.name != "fd" && masks&(FanCreate|FanDelete|FanRename|FanDeleteSelf) != FanCreate|FanDelete|FanRename|FanDeleteSelf {
				t.Errorf("masks seen %#x", masks)
			}
		})
	}
	t.Run("wl", func(t *testing.T) {
		// The shape of shared/bench/wl.c: create+write+close, rename every
		// second file, unlink all. The benchmarks decode this buffer.
		g, err := Init(InitClassNotif | InitReportDFIDNm | InitReportFID | InitReportTarget)
		if err != nil {
			t.Fatal(err)
		}
		defer g.Close()
		if err := g.Mark(MarkAdd|MarkFilesystem, all, root); err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(root, "wl")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		const n = 100
		for i := range n {
			if err := os.WriteFile(filepath.Join(dir, "f"+strconv.Itoa(i)), make([]byte, 4096), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		for i := 0; i < n; i += 2 {
			if err := os.Rename(filepath.Join(dir, "f"+strconv.Itoa(i)), filepath.Join(dir, "r"+strconv.Itoa(i))); err != nil {
				t.Fatal(err)
			}
		}
		for i := range n {
			p := "f"
			if i%2 == 0 {
				p = "r"
			}
			if err := os.Remove(filepath.Join(dir, p+strconv.Itoa(i))); err != nil {
				t.Fatal(err)
			}
		}
		bufs := drain(t, g, 256<<10)
		if len(bufs) != 1 {
			t.Fatalf("%d reads", len(bufs))
		}
		evs, err := Decode(nil, bufs[0])
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("wl: %d events, %d bytes", len(evs), len(bufs[0]))
		if *capture {
			writeSeed(t, "real-wl", bufs[0])
		}
	})
	t.Run("overflow", func(t *testing.T) {
		g, err := Init(InitClassNotif | InitReportDFIDNm | InitReportFID)
		if err != nil {
			t.Fatal(err)
		}
		defer g.Close()
		if err := g.Mark(MarkAdd|MarkFilesystem, FanCreate, root); err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(root, "many")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i := range 17000 {
			f, err := os.Create(filepath.Join(dir, strconv.Itoa(i)))
			if err != nil {
				t.Fatal(err)
			}
			f.Close()
		}
		bufs := drain(t, g, 64<<10)
		last := bufs[len(bufs)-1]
		evs, err := Decode(nil, last)
		if err != nil {
			t.Fatal(err)
		}
		if evs[len(evs)-1].Mask != FanQOverflow {
			t.Fatalf("last event mask %#x, want FAN_Q_OVERFLOW", evs[len(evs)-1].Mask)
		}
		if *capture {
			// Keep the seed small: the last few events and the overflow.
			off := 0
			for i := 0; i < len(evs)-8; i++ {
				off += int(binary.NativeEndian.Uint32(last[off+metaEventLen:]))
			}
			tail := last[off:]
			writeSeed(t, "real-overflow", tail)
		}
	})
}

const fdModeBitsForTest = FanOpen | FanOpenExec | FanAccess | FanModify | FanCloseWrite | FanCloseNowrite | FanOnDir

// TestReadAllocs: reading the group allocates nothing, whether events
// are queued or not (a closure per read used to, three allocations a read).
func TestReadAllocs(t *testing.T) {
	testutil.RequireRoot(t)
	root := testutil.TmpfsMount(t, "16m")
	g, err := Init(InitClassNotif | InitReportDFIDNm | InitReportFID)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if err := g.Mark(MarkAdd|MarkFilesystem, FanCreate|FanDelete, root); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	name := filepath.Join(root, "f")
	ops := func() {
		f, err := os.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		if err := os.Remove(name); err != nil {
			t.Fatal(err)
		}
	}
	var got int
	reads := func() {
		// The events queued by ops: Read does not wait for them; then
		// TryRead drains the queue and reads it empty.
		n, err := g.Read(buf)
		if err != nil || n == 0 {
			t.Fatalf("Read = %d, %v", n, err)
		}
		got += n
		for n > 0 {
			if n, err = g.TryRead(buf); err != nil {
				t.Fatal(err)
			}
		}
	}
	opsOnly := testing.AllocsPerRun(50, ops)
	for n := 1; n > 0; {
		if n, err = g.TryRead(buf); err != nil {
			t.Fatal(err)
		}
	}
	a := testing.AllocsPerRun(50, func() {
		ops()
		reads()
	})
	if got == 0 {
		t.Fatal("nothing read")
	}
	if a > opsOnly {
		t.Errorf("reads allocate %.1f times a round, want 0", a-opsOnly)
	}
}
