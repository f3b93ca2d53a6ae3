package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// monitor is one running monitor process.
type monitor struct {
	cmd     *exec.Cmd
	stdout  string // file holding its stdout
	stderr  string
	done    chan struct{}
	waitErr error
	exited  time.Time
	hwmKiB  atomic.Int64 // highest VmHWM seen
}

// startMonitor starts argv with stdout and stderr in files under outDir.
// The child dies with the harness (Pdeathsig), so an interrupted run leaves
// no monitor marking the tmpfs behind.
func startMonitor(outDir, tag, dir string, env []string, argv ...string) (*monitor, error) {
	m := &monitor{
		stdout: filepath.Join(outDir, tag+".stdout"),
		stderr: filepath.Join(outDir, tag+".stderr"),
		done:   make(chan struct{}),
	}
	so, err := os.Create(m.stdout)
	if err != nil {
		return nil, fmt.Errorf("monitor stdout: %w", err)
	}
	defer so.Close()
	se, err := os.Create(m.stderr)
	if err != nil {
		return nil, fmt.Errorf("monitor stderr: %w", err)
	}
	defer se.Close()
	m.cmd = exec.Command(argv[0], argv[1:]...)
	m.cmd.Dir = dir
	m.cmd.Env = append(os.Environ(), env...)
	m.cmd.Stdout, m.cmd.Stderr = so, se
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := m.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	go func() {
		m.waitErr = m.cmd.Wait()
		m.exited = time.Now()
		close(m.done)
	}()
	go m.pollHWM()
	return m, nil
}

// pollHWM samples VmHWM until the monitor exits. wait4's ru_maxrss cannot
// be used: Go starts children with vfork, so the child's signal->maxrss
// inherits the harness's own high-water mark at exec. VmHWM belongs to the
// new mm alone, but vanishes once the process is a zombie, hence polling.
func (m *monitor) pollHWM() {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if v, err := vmHWM(m.cmd.Process.Pid); err == nil && v > m.hwmKiB.Load() {
			m.hwmKiB.Store(v)
		}
		select {
		case <-m.done:
			return
		case <-t.C:
		}
	}
}

func vmHWM(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read status: %w", err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				return strconv.ParseInt(f[0], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("no VmHWM for pid %d", pid)
}

func (m *monitor) pid() int { return m.cmd.Process.Pid }

func (m *monitor) signal(s os.Signal) error {
	select {
	case <-m.done:
		return fmt.Errorf("%s exited early: %w: %s", filepath.Base(m.cmd.Path), m.waitErr, m.tail())
	default:
	}
	if err := m.cmd.Process.Signal(s); err != nil {
		return fmt.Errorf("signal %v: %w", s, err)
	}
	return nil
}

// wait waits for exit up to timeout, then kills the monitor.
func (m *monitor) wait(timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-m.done:
	case <-t.C:
		_ = m.cmd.Process.Kill()
		<-m.done
		return fmt.Errorf("%s did not exit within %v; killed: %s", filepath.Base(m.cmd.Path), timeout, m.tail())
	}
	if m.waitErr != nil {
		return fmt.Errorf("%s: %w: %s", filepath.Base(m.cmd.Path), m.waitErr, m.tail())
	}
	return nil
}

// stop sends sig and waits up to timeout for the exit. A monitor that has
// to be killed is an error; one that exits non-zero on its own still
// produced its output, so that only becomes a warning.
func (m *monitor) stop(sig os.Signal, timeout time.Duration) (warn string, err error) {
	if err := m.signal(sig); err != nil {
		return "", err
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-m.done:
	case <-t.C:
		m.kill()
		return "", fmt.Errorf("%s did not exit within %v of %v; killed: %s", filepath.Base(m.cmd.Path), timeout, sig, m.tail())
	}
	if m.waitErr != nil {
		return fmt.Sprintf("%s exited after %v: %v: %s", filepath.Base(m.cmd.Path), sig, m.waitErr, lastLine(m.tail())), nil
	}
	return "", nil
}

func lastLine(s string) string {
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// kill is the error-path cleanup.
func (m *monitor) kill() {
	select {
	case <-m.done:
	default:
		_ = m.cmd.Process.Kill()
		<-m.done
	}
}

// usage is the monitor's CPU from wait4 and its peak RSS from VmHWM.
func (m *monitor) usage() (cpu float64, maxRSSKiB int64) {
	maxRSSKiB = m.hwmKiB.Load()
	ru, ok := m.cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		return 0, maxRSSKiB
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime), maxRSSKiB
}

func (m *monitor) tail() string {
	b, _ := os.ReadFile(m.stderr)
	if len(b) > 600 {
		b = b[len(b)-600:]
	}
	return strings.TrimSpace(string(b))
}

// countMarks counts the fanotify marks pid holds, from the "fanotify …
// mask:" lines in /proc/PID/fdinfo. It is how the harness knows that a
// monitor that offers no readiness signal (fatrace, fanaudit) is watching.
func countMarks(pid int) (int, error) {
	dir := fmt.Sprintf("/proc/%d/fdinfo", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", dir, err)
	}
	n := 0
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // fd closed meanwhile
		}
		for line := range bytes.SplitSeq(b, []byte("\n")) {
			if bytes.HasPrefix(line, []byte("fanotify ")) && bytes.Contains(line, []byte(" mask:")) {
				n++
			}
		}
	}
	return n, nil
}

// waitMarked polls until the monitor holds at least one fanotify mark and
// the number of marks has not changed for settle, so a monitor that places
// several marks in turn is fully set up.
func (m *monitor) waitMarked(ctx context.Context, timeout, settle time.Duration) error {
	deadline := time.Now().Add(timeout)
	last, since := -1, time.Now()
	for {
		select {
		case <-m.done:
			return fmt.Errorf("%s exited before marking: %w: %s", filepath.Base(m.cmd.Path), m.waitErr, m.tail())
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		n, err := countMarks(m.pid())
		if err != nil {
			return err
		}
		if n != last {
			last, since = n, time.Now()
		} else if n > 0 && time.Since(since) >= settle {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s placed no fanotify mark within %v: %s", filepath.Base(m.cmd.Path), timeout, m.tail())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitFile polls for a readiness file with a deadline.
func waitFile(ctx context.Context, path string, timeout time.Duration, m *monitor) error {
	deadline := time.Now().Add(timeout)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		select {
		case <-m.done:
			return fmt.Errorf("%s exited before %s appeared: %w: %s", filepath.Base(m.cmd.Path), path, m.waitErr, m.tail())
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not appear within %v", path, timeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// waitContains polls file for needle, reading only what was appended
// since the last poll. poke, if set, runs first and then every pokeEvery:
// an end marker written once can be dropped by an overflowing queue, so the
// caller writes it again until it shows up.
func (m *monitor) waitContains(ctx context.Context, file string, needle []byte, timeout time.Duration, poke func() error) error {
	const pokeEvery = 250 * time.Millisecond
	deadline := time.Now().Add(timeout)
	f, err := os.Open(file)
	if err != nil {
		return fmt.Errorf("open %s: %w", file, err)
	}
	defer f.Close()
	var carry []byte
	buf := make([]byte, 1<<20)
	var lastPoke time.Time
	for {
		if poke != nil && time.Since(lastPoke) >= pokeEvery {
			if err := poke(); err != nil {
				return err
			}
			lastPoke = time.Now()
		}
		n, err := f.Read(buf)
		if n > 0 {
			chunk := append(carry, buf[:n]...)
			if bytes.Contains(chunk, needle) {
				return nil
			}
			keep := min(len(chunk), len(needle))
			carry = append(carry[:0], chunk[len(chunk)-keep:]...)
			continue
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read %s: %w", file, err)
		}
		select {
		case <-m.done:
			return fmt.Errorf("%s exited before %q showed up: %w: %s", filepath.Base(m.cmd.Path), needle, m.waitErr, m.tail())
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%q not in %s within %v", needle, file, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitQuiet polls the size of file and the CPU time of the monitor until
// neither has changed for quiet, and returns when the file last grew and the
// CPU time the monitor had used by then. It finds the end of a monitor's
// work without relying on how it shuts down.
func (m *monitor) waitQuiet(ctx context.Context, file string, quiet, timeout time.Duration) (last time.Time, cpuAtLast float64, err error) {
	deadline := time.Now().Add(timeout)
	var size int64 = -1
	cpu := -1.0
	last = time.Now()
	stable := last
	for {
		select {
		case <-m.done:
			return last, cpuAtLast, fmt.Errorf("%s exited while working: %w: %s", filepath.Base(m.cmd.Path), m.waitErr, m.tail())
		case <-ctx.Done():
			return last, cpuAtLast, ctx.Err()
		default:
		}
		now := time.Now()
		var sz int64
		if st, err := os.Stat(file); err == nil {
			sz = st.Size()
		}
		c, err := procCPU(m.pid())
		if err != nil {
			return last, cpuAtLast, err
		}
		grew := sz != size
		if grew {
			size, last, cpuAtLast = sz, now, c
		}
		if grew || c != cpu {
			cpu, stable = c, now
		}
		if now.Sub(last) >= quiet && now.Sub(stable) >= quiet {
			return last, cpuAtLast, nil
		}
		if now.After(deadline) {
			return last, cpuAtLast, fmt.Errorf("%s still busy after %v", filepath.Base(m.cmd.Path), timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// procCPU reads utime+stime of a live process from /proc/PID/stat.
func procCPU(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read stat: %w", err)
	}
	// comm may contain spaces; fields resume after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("parse /proc/%d/stat: %w", pid, err)
	}
	// USER_HZ is 100 on every Linux ABI Go supports.
	return float64(ut+st) / 100, nil
}

// run runs a short helper command and returns its stdout.
func run(ctx context.Context, dir string, argv ...string) (string, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	if err := cmd.Run(); err != nil {
		return so.String(), fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(se.String()))
	}
	return so.String(), nil
}

// mountTmpfs mounts a private tmpfs on a new directory under parent.
func mountTmpfs(ctx context.Context, parent, name, size string) (string, error) {
	dir, err := os.MkdirTemp(parent, name+"-")
	if err != nil {
		return "", fmt.Errorf("tmpfs dir: %w", err)
	}
	if _, err := run(ctx, "", "mount", "-t", "tmpfs", "-o", "size="+size+",mode=0755", "fabench-"+name, dir); err != nil {
		os.Remove(dir)
		return "", err
	}
	return dir, nil
}

func unmountTmpfs(dir string) error {
	if _, err := run(context.Background(), "", "umount", "-l", dir); err != nil {
		return err
	}
	return os.Remove(dir)
}
