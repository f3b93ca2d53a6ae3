package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/fanaudit/fanaudit/internal/testutil"
)

// TestAttributionAsShipped runs the binary as users run it, `fanaudit
// watch DIR` and `fanaudit run` with a config that sets only the paths,
// while short-lived processes of another uid (`sh -c 'echo x > f'`, with
// /bin/sh on the unwatched root filesystem) write one file each and a
// second process rewrites files beside them. Every create and close_write
// of theirs must name /bin/sh's executable and the uid in at least 99.9 %
// of the records, none may name a wrong one, and every record carries its
// path or says it is missing. The rate of "full" records is logged.
func TestAttributionAsShipped(t *testing.T) {
	testutil.RequireRoot(t)
	const n = 2000 // the count, also with the -race build CI runs
	shell, err := filepath.EvalSymlinks("/bin/sh")
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{"watch", "run"} {
		t.Run(mode, func(t *testing.T) {
			mnt := testutil.TmpfsMount(t, "64m")
			dir, w := filepath.Join(mnt, "d"), filepath.Join(mnt, "w")
			for _, d := range []string{dir, w} {
				if err := os.Mkdir(d, 0o777); err != nil {
					t.Fatal(err)
				}
				os.Chmod(d, 0o777)
			}
			var a *agent
			if mode == "watch" {
				a = start(t, true, "watch", mnt)
			} else {
				a = start(t, true, "run", "--config", runConfig(t, fmt.Sprintf("paths = [%q]\n", mnt)))
			}
			a.readStdout()
			a.waitLog("running", startTimeout)

			stop := filepath.Join(mnt, "stop")
			load := exec.Command("/bin/sh", "-c", `while [ ! -e "$1" ]; do for i in 0 1 2 3 4 5 6 7 8 9; do echo y > "$0/g$i"; done; sleep 0.01; done`, w, stop)
			if err := load.Start(); err != nil {
				t.Fatal(err)
			}
			loop := `i=0; while [ $i -lt ` + strconv.Itoa(n) + ` ]; do "$0" -c "echo x > $1/f$i"; i=$((i+1)); done`
			cmd := exec.Command("/bin/sh", "-c", loop, shell, dir)
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 4321, Gid: 4321}}
			out, err := cmd.CombinedOutput()
			os.WriteFile(stop, nil, 0o644)
			if werr := load.Wait(); werr != nil {
				t.Errorf("load: %v", werr)
			}
			if err != nil {
				t.Fatalf("spawn loop: %v: %s", err, out)
			}
			a.stop()

			var recs, right, full, lost int
			for i, line := range strings.Split(strings.TrimSpace(string(a.output())), "\n") {
				var r struct {
					Event struct {
						Action string `json:"action"`
					} `json:"event"`
					File struct {
						Path string `json:"path"`
					} `json:"file"`
					Process struct {
						Executable string `json:"executable"`
					} `json:"process"`
					User struct {
						ID string `json:"id"`
					} `json:"user"`
					Fanaudit struct {
						Enrichment string   `json:"enrichment"`
						Missing    []string `json:"missing"`
					} `json:"fanaudit"`
				}
				if err := json.Unmarshal([]byte(line), &r); err != nil {
					t.Fatalf("line %d: %v", i+1, err)
				}
				if r.Event.Action == "events_lost" {
					lost++
					continue
				}
				if r.File.Path == "" && !strings.Contains(strings.Join(r.Fanaudit.Missing, ","), "file.path") {
					t.Errorf("line %d: no file.path and no fanaudit.missing file.path: %s", i+1, line)
				}
				if !strings.HasPrefix(r.File.Path, dir+"/") || (r.Event.Action != "create" && r.Event.Action != "close_write") {
					continue
				}
				recs++
				okExe, okUID := r.Process.Executable == shell, r.User.ID == "4321"
				if okExe && okUID {
					right++
				}
				if r.Process.Executable != "" && !okExe {
					t.Errorf("wrong executable %q (want %q)", r.Process.Executable, shell)
				}
				if r.User.ID != "" && !okUID {
					t.Errorf("wrong user.id %q", r.User.ID)
				}
				if r.Fanaudit.Enrichment == "full" {
					full++
				}
			}
			if lost > 0 {
				t.Errorf("%d events_lost records", lost)
			}
			if recs != 2*n {
				t.Errorf("%d create/close_write records, want %d", recs, 2*n)
			}
			rate := float64(right) / float64(max(recs, 1))
			t.Logf("%s: exe+uid right %d/%d = %.2f%%, full %d = %.2f%%", mode, right, recs, 100*rate, full, 100*float64(full)/float64(max(recs, 1)))
			if rate < 0.999 {
				t.Errorf("attribution %.2f%% < 99.9%%", 100*rate)
			}
		})
	}
}
