// Command fanaudit is the file-activity audit agent. This package owns the
// command line of ../../shared/contract.md (watch, run, check-config,
// version), the exit codes, signal handling and the wiring of capture,
// enrichment, pipeline, sinks and metrics.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	// Imported for its initializer: SIGHUP and SIGPIPE are ignored from
	// the first moments of the process, before any slower initializer.
	_ "github.com/fanaudit/fanaudit/cmd/fanaudit/internal/earlysig"
)

// version is set at link time (-X main.version=...).
var version = "dev"

// Exit codes of the contract.
const (
	exitOK      = 0
	exitRuntime = 1
	exitUsage   = 2
)

func main() {
	// Signal handling comes before anything slow: SIGTERM or SIGINT at any
	// point of the start-up is a clean stop (exit 0). SIGHUP and SIGPIPE
	// are ignored already (earlysig).
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	// The first signal starts a clean stop; restoring the default action
	// lets a second one end a drain that takes too long.
	context.AfterFunc(ctx, stop)
	stopProfile := benchProfile(os.Stderr)
	stdout, restore := pollableStdout(os.Stdout)
	code := run(ctx, os.Args[1:], stdout, os.Stderr)
	restore()
	stop()
	stopProfile()
	os.Exit(code)
}

// pollableStdout returns stdout as a file the runtime's poller drives when
// it is a pipe or a socket, so that the stdout sink's write to a reader
// that stopped reading can be interrupted at the shutdown timeout instead
// of holding the agent for good. O_NONBLOCK belongs to the open file
// description, which others may share, so restore puts it back.
func pollableStdout(f *os.File) (w *os.File, restore func()) {
	fi, err := f.Stat()
	if err != nil || fi.Mode()&(os.ModeNamedPipe|os.ModeSocket) == 0 {
		return f, func() {}
	}
	fd, err := syscall.Dup(int(f.Fd()))
	if err != nil {
		return f, func() {}
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		syscall.Close(fd)
		return f, func() {}
	}
	w = os.NewFile(uintptr(fd), f.Name())
	return w, func() {
		_ = syscall.SetNonblock(fd, false)
		w.Close()
	}
}

// usageError is a command-line or config error: exit 2, one stderr line.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error {
	return &usageError{msg: fmt.Sprintf(format, a...)}
}

const usageText = `usage:
  fanaudit watch [--events LIST] [--exclude GLOB]... [--duration D]
                 [--format ecs|ocsf|text] PATH...
      --format: ecs (default: ECS JSON lines), ocsf (OCSF File System
      Activity JSON lines) or text (one line per event, for people;
      coloured on a terminal)
  fanaudit run [--config FILE]
  fanaudit check-config [--config FILE]
  fanaudit seal-keygen --state FILE
  fanaudit verify --key KEY [--kafka] [--allow-pruned] FILE...
  fanaudit verify --key KEY [--allow-pruned] (--config FILE --sink NAME | --brokers LIST --topic TOPIC)
  fanaudit version
`

// run executes one command and returns the exit code. It writes at most
// one line to stderr for a usage or config error.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	err := dispatch(ctx, args, stdout, stderr)
	if err == nil {
		return exitOK
	}
	if errors.Is(err, errHelp) {
		fmt.Fprint(stdout, usageText)
		return exitOK
	}
	var ue *usageError
	var ce *configError
	var ec exitCode
	switch {
	case errors.As(err, &ec):
		return int(ec)
	case errors.As(err, &ue), errors.As(err, &ce):
		fmt.Fprintln(stderr, "fanaudit: "+oneLine(err.Error()))
		return exitUsage
	}
	fmt.Fprintln(stderr, "fanaudit: "+oneLine(err.Error()))
	return exitRuntime
}

var errHelp = errors.New("help requested")

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usagef("missing command (want watch, run, check-config, seal-keygen, verify or version)")
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "watch":
		return cmdWatch(ctx, rest, stdout, stderr)
	case "run":
		return cmdRun(ctx, rest, stdout, stderr)
	case "check-config":
		return cmdCheckConfig(rest, stdout)
	case "seal-keygen":
		return cmdSealKeygen(rest, stdout)
	case "verify":
		return cmdVerify(rest, stdout, stderr)
	case "version", "--version":
		if len(rest) > 0 {
			return usagef("version: unexpected argument %q", rest[0])
		}
		fmt.Fprintf(stdout, "fanaudit %s\n", version)
		return nil
	case "help", "-h", "-help", "--help":
		return errHelp
	default:
		return usagef("unknown command %q (want watch, run, check-config, seal-keygen, verify or version)", cmd)
	}
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
