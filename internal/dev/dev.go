// Package dev is `worker --dev`: an embedded Redis (miniredis) on
// 127.0.0.1:6379, the Cloudflare simulator on 127.0.0.1:8787 when no API
// token is set, and example zones, all announced loudly. It sets the PURGE_*
// variables the rest of the worker reads, leaving any the user set alone.
package dev

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/alicebob/miniredis/v2"

	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/purge/cftest"
	"github.com/purgeq/purgeq/tasks"
)

// Addresses and example zones of the development environment.
const (
	RedisAddr     = "127.0.0.1:6379"
	SimulatorAddr = "127.0.0.1:8787"
	Token         = "dev-token"
	Zones         = "example.com=023e105f4ecef8ad9ca31a8372d0c353,example.org=372e67954025e0ba6aaa6d586b9e0b59"
)

// Env is a running development environment.
type Env struct {
	redis *miniredis.Miniredis
	sim   *cftest.Server
}

// Start brings the environment up and prints what it started to w.
func Start(ctx context.Context, w io.Writer) (*Env, error) {
	env := &Env{redis: miniredis.NewMiniRedis()}
	if err := env.redis.StartAddr(RedisAddr); err != nil {
		return nil, fmt.Errorf("starting the embedded Redis on %s: %w (is a Redis already running there? stop it, or run without --dev)", RedisAddr, err)
	}
	setDefault("PURGE_REDIS_URL", "redis://"+RedisAddr+"/0")
	setDefault("PURGE_ZONES", Zones)
	zones, err := tasks.ParseZones(os.Getenv("PURGE_ZONES"))
	if err != nil {
		env.Close()
		return nil, err
	}
	simulated := os.Getenv("PURGE_CLOUDFLARE_API_TOKEN") == "" && os.Getenv("PURGE_CLOUDFLARE_API_TOKEN_FILE") == ""
	if simulated {
		env.sim = cftest.NewUnstartedServer(cftest.Config{Token: Token, Zones: zones.IDs(), Plan: purge.Plans["free"],
			OnCall: func(c cftest.Call) { logCall(w, c) }})
		if err := env.sim.StartOn(SimulatorAddr); err != nil {
			env.Close()
			return nil, fmt.Errorf("starting the Cloudflare simulator on %s: %w", SimulatorAddr, err)
		}
		os.Setenv("PURGE_CLOUDFLARE_API_TOKEN", Token)
		os.Setenv("PURGE_CLOUDFLARE_API_URL", env.sim.URL)
	}

	bar := strings.Repeat("=", 72)
	fmt.Fprintf(w, "%s\n  DEVELOPMENT MODE — not for production\n", bar)
	fmt.Fprintf(w, "  embedded Redis (miniredis, in memory): %s\n", RedisAddr)
	if simulated {
		fmt.Fprintf(w, "  Cloudflare SIMULATOR (free plan limits): %s — no real purges are sent\n", env.sim.URL)
	} else {
		fmt.Fprintf(w, "  Cloudflare API: %s with your token — REAL purges\n", os.Getenv("PURGE_CLOUDFLARE_API_URL"))
	}
	fmt.Fprintf(w, "  zones: %s\n", zones)
	fmt.Fprintf(w, "  UI: http://%s/monitoring/   health: /healthz\n", httpAddr())
	fmt.Fprintf(w, "\n  Try, from another terminal:\n    go run ./cmd/enqueue https://example.com/index.html --tag product-1 --zone example.com\n%s\n", bar)
	return env, nil
}

// Close stops what Start started.
func (e *Env) Close() {
	if e.sim != nil {
		e.sim.Close()
	}
	e.redis.Close()
}

func logCall(w io.Writer, c cftest.Call) {
	outcome := fmt.Sprintf("%d", c.Status)
	if c.Code != 0 {
		outcome += fmt.Sprintf(" code %d", c.Code)
	}
	first := ""
	if len(c.Items) > 0 {
		first = c.Items[0]
		if len(c.Items) > 1 {
			first += fmt.Sprintf(" (+%d more)", len(c.Items)-1)
		}
	}
	fmt.Fprintf(w, "cloudflare-simulator: %s zone=%s kind=%s items=%d %s → %s\n", c.At.Format("15:04:05.000"), c.Zone, c.Kind, len(c.Items), first, outcome)
}

func setDefault(k, v string) {
	if os.Getenv(k) == "" {
		os.Setenv(k, v)
	}
}

func httpAddr() string {
	if a := os.Getenv("PURGE_HTTP_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:8080"
}
