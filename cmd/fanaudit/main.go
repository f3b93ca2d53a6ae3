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
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	// The first signal starts a clean stop; restoring the default action
	// lets a second one end a drain that takes too long.
	context.AfterFunc(ctx, stop)
	stopProfile := benchProfile(os.Stderr)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	stopProfile()
	os.Exit(code)
}

// usageError is a command-line or config error: exit 2, one stderr line.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error {
	return &usageError{msg: fmt.Sprintf(format, a...)}
}

const usageText = `usage:
  fanaudit watch [--events LIST] [--exclude GLOB]... [--duration D] PATH...
  fanaudit run [--config FILE]
  fanaudit check-config [--config FILE]
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
	switch {
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
		return usagef("missing command (want watch, run, check-config or version)")
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "watch":
		return cmdWatch(ctx, rest, stdout, stderr)
	case "run":
		return cmdRun(ctx, rest, stdout, stderr)
	case "check-config":
		return cmdCheckConfig(rest, stdout)
	case "version", "--version":
		if len(rest) > 0 {
			return usagef("version: unexpected argument %q", rest[0])
		}
		fmt.Fprintf(stdout, "fanaudit %s\n", version)
		return nil
	case "help", "-h", "-help", "--help":
		return errHelp
	default:
		return usagef("unknown command %q (want watch, run, check-config or version)", cmd)
	}
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
