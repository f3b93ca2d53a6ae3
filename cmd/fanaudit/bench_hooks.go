//go:build fanaudit_bench

package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"runtime/trace"
	"syscall"

	"github.com/rs/zerolog"
)

// This file exists only in binaries built with -tags fanaudit_bench (the
// benchmark harness in bench/ builds them so); the production binary has
// the no-op twins in bench_hooks_off.go and reads no FANAUDIT_BENCH_*
// variables.

// benchProfile writes a pprof CPU profile to $FANAUDIT_CPUPROFILE, and an
// execution trace to $FANAUDIT_TRACE (who wakes whom: goroutine hand-offs
// and idle processors woken), until the returned func runs, and then the
// allocation profile to $FANAUDIT_MEMPROFILE, so benchmarks can show
// where the time and the memory go.
func benchProfile(stderr io.Writer) func() {
	stopTrace := benchTrace(stderr)
	stopCPU := benchCPUProfile(stderr)
	return func() {
		stopCPU()
		stopTrace()
		benchHeapProfile(stderr)
	}
}

// benchHeapProfile writes the heap profile (live and allocated since the
// start) to $FANAUDIT_MEMPROFILE.
func benchHeapProfile(stderr io.Writer) {
	path := os.Getenv("FANAUDIT_MEMPROFILE")
	if path == "" {
		return
	}
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintln(stderr, "fanaudit: FANAUDIT_MEMPROFILE:", err)
		return
	}
	defer f.Close()
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		fmt.Fprintln(stderr, "fanaudit: FANAUDIT_MEMPROFILE:", err)
	}
}

func benchTrace(stderr io.Writer) func() {
	path := os.Getenv("FANAUDIT_TRACE")
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintln(stderr, "fanaudit: FANAUDIT_TRACE:", err)
		return func() {}
	}
	if err := trace.Start(f); err != nil {
		fmt.Fprintln(stderr, "fanaudit: FANAUDIT_TRACE:", err)
		f.Close()
		return func() {}
	}
	return func() {
		trace.Stop()
		f.Close()
	}
}

func benchCPUProfile(stderr io.Writer) func() {
	path := os.Getenv("FANAUDIT_CPUPROFILE")
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintln(stderr, "fanaudit: FANAUDIT_CPUPROFILE:", err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		fmt.Fprintln(stderr, "fanaudit: FANAUDIT_CPUPROFILE:", err)
		f.Close()
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// benchRunContext is the benchmarks' drain mode (FANAUDIT_BENCH_DRAIN=1,
// like fanread -D): with the marks in place it waits for SIGUSR1 while the
// kernel queue fills, then returns a context that has already ended, so
// the pipeline reads the queue until it is empty, flushes and stops. If
// ctx ends first it returns ctx, which has ended too. Without the
// variable it returns ctx.
func benchRunContext(ctx context.Context, log zerolog.Logger) context.Context {
	if os.Getenv("FANAUDIT_BENCH_DRAIN") != "1" {
		return ctx
	}
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)
	log.Info().Msg("bench drain: waiting for SIGUSR1")
	select {
	case <-usr1:
	case <-ctx.Done():
		return ctx
	}
	drained, cancel := context.WithCancel(ctx)
	cancel()
	return drained
}
