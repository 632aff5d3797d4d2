package worker

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/purgeq/purgeq/internal/config"
	"github.com/purgeq/purgeq/internal/logging"
)

// RunFromEnv runs a worker configured by the environment until SIGTERM or
// an interrupt, logging JSON to stderr, and returns an exit code: what a
// test or benchmark that re-executes itself as a worker process runs.
func RunFromEnv() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	cfg, err := config.Load()
	if err == nil {
		err = cfg.CheckWorker()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	log, err := logging.New(os.Stderr, cfg.LogLevel, "json")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if err := Run(ctx, cfg, log); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
