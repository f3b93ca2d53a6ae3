// Package earlysig owns what the agent does about signals before main
// runs: it ignores SIGHUP and SIGPIPE from its package initializer, which
// runs before the heavier dependencies' initializers (packages initialize
// in import-path order once their dependencies are ready), so that a
// SIGHUP in the first milliseconds of start-up cannot kill the agent with
// the default action. main later asks for SIGHUP on a channel (reopen the
// outputs) once the sinks exist; SIGPIPE stays ignored, so that a closed
// stdout pipe is a write error of the stdout sink (EPIPE) and not the end
// of the agent.
package earlysig

import (
	"os/signal"
	"syscall"
)

func init() {
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)
}
