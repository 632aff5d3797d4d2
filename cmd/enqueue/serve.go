package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/purgeq/purgeq/batching"
	"github.com/purgeq/purgeq/internal/config"
	"github.com/purgeq/purgeq/internal/intake"
	"github.com/purgeq/purgeq/internal/logging"
	"github.com/purgeq/purgeq/limits"
	"github.com/purgeq/purgeq/tasks"
)

// maxBody bounds one intake request: about 100,000 URLs.
const maxBody = 10 << 20

// zonesFollow is how often the intake re-reads the workers' zones when
// PURGE_ZONES is unset.
const zonesFollow = 15 * time.Second

// serve runs the HTTP intake until ctx ends.
func serve(ctx context.Context, args []string, stderr io.Writer) error {
	if len(args) > 0 {
		return usageError("usage: enqueue serve (configured by PURGE_INTAKE_ADDR, PURGE_INTAKE_TOKENS, PURGE_REDIS_URL, PURGE_ZONES)")
	}
	cfg, err := config.Load()
	if err != nil {
		return usageError("%v", err)
	}
	if len(cfg.Producers) == 0 {
		return usageError("no producers: set PURGE_INTAKE_TOKENS, or name producers in PURGE_CONFIG_FILE; the intake accepts only requests bearing one of their tokens")
	}
	log, err := logging.New(os.Stderr, cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		return usageError("%v", err)
	}
	// The intake starts whether or not Redis answers: while it does not,
	// requests get 503 and nothing is queued.
	c, err := connect(ctx, cfg, false)
	if err != nil {
		return err
	}
	defer c.close()
	if len(c.zs()) == 0 {
		log.Warn().Msg("no zones known (PURGE_ZONES unset and no worker has published its zones): every request will be refused until then")
	} else if err := config.ResolveProducerZones(cfg.Producers, c.zs()); err != nil {
		return usageError("%v", err)
	}
	if c.published {
		go c.followZones(ctx, zonesFollow, log)
	}
	srv := &http.Server{
		Handler: intake.Handler(intake.Options{Queue: c, Producers: cfg.Producers, Windows: limits.NewProducerWindows(c.rdb),
			Streams: func(soft bool, key string) *tasks.Stream { return c.cl().NewStream(c.rdb, soft, key) },
			History: c.history,
			Zones:   c.zs, MaxBody: maxBody, Log: log}),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	ln, err := net.Listen("tcp", cfg.IntakeAddr)
	if err != nil {
		return usageError("PURGE_INTAKE_ADDR: %v", err)
	}
	log.Info().Str("addr", ln.Addr().String()).Int("tokens", len(cfg.IntakeTokens)).Int("zones", len(c.zs())).Msg("intake listening")
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	log.Info().Msg("intake shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-done; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Build, EnqueueBuilt and Status make conn the intake's queue.
func (c *conn) Build(pr tasks.PurgeRequest) (*tasks.Request, error) {
	return c.build(context.Background(), pr)
}

func (c *conn) EnqueueBuilt(ctx context.Context, r *tasks.Request) (tasks.Receipt, error) {
	return c.cl().EnqueueBuilt(ctx, r)
}

// Status is a request's progress.
func (c *conn) Status(ctx context.Context, id string) (batching.Status, error) {
	return c.requests.Status(ctx, id)
}
