//go:build !fanaudit_bench

package main

import (
	"context"
	"io"

	"github.com/rs/zerolog"
)

// The production build's twins of bench_hooks.go: benchmark hooks do not
// exist here, so no environment variable changes how the agent runs.

func benchProfile(io.Writer) func() { return func() {} }

func benchRunContext(ctx context.Context, _ zerolog.Logger) context.Context { return ctx }
