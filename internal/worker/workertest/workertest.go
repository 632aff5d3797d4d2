// Package workertest runs a worker inside a test's process: configuration
// from the environment (PURGE_*), stopped when the test ends. The worker's
// own tests and the enqueue command's share it.
package workertest

import (
	"context"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/purgeq/purgeq/internal/config"
	"github.com/purgeq/purgeq/internal/worker"
)

// Start loads the configuration, checks it as the worker command does and
// runs a worker until the test ends or stop is called (stop waits for it,
// and reports a worker that failed).
func Start(t testing.TB, log zerolog.Logger) (cfg *config.Config, stop func()) {
	t.Helper()
	cfg, err := config.Load()
	if err == nil {
		err = cfg.CheckWorker()
	}
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- worker.Run(ctx, cfg, log) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("worker: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return cfg, stop
}
