// Package dev is `worker --dev`: a Redis (PURGE_REDIS_URL when set, else an
// embedded miniredis on 127.0.0.1:6379, or on a free port when that one is
// taken), the Cloudflare simulator on 127.0.0.1:8787 (or a free port) when no
// API token is set, the worker's HTTP side on 127.0.0.1:8080 (or a free
// port) unless PURGE_HTTP_ADDR is set, and example zones, all announced
// loudly together with the `export PURGE_REDIS_URL=…` other terminals need.
// It sets the PURGE_* variables the rest of the worker reads, leaving any the
// user set alone.
package dev

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/purgeq/purgeq/internal/redisconn"
	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/purge/cftest"
	"github.com/purgeq/purgeq/tasks"
)

// Preferred addresses and example zones of the development environment.
// An address that is taken is replaced by a free loopback port.
const (
	RedisAddr     = "127.0.0.1:6379"
	SimulatorAddr = "127.0.0.1:8787"
	HTTPAddr      = "127.0.0.1:8080"
	Token         = "dev-token"
	Zones         = "example.com=023e105f4ecef8ad9ca31a8372d0c353,example.org=372e67954025e0ba6aaa6d586b9e0b59"
)

// Env is a running development environment.
type Env struct {
	redis *miniredis.Miniredis // nil when PURGE_REDIS_URL names the user's Redis
	sim   *cftest.Server
}

// Start brings the environment up and prints what it started to w.
func Start(ctx context.Context, w io.Writer) (*Env, error) {
	env := &Env{}
	var notes []string // ports that were taken, said in the banner

	redisURL, ownRedis := os.Getenv("PURGE_REDIS_URL"), os.Getenv("PURGE_REDIS_URL") != ""
	if ownRedis {
		if err := ping(ctx, redisURL); err != nil {
			return nil, fmt.Errorf("PURGE_REDIS_URL is set (%s) but that Redis does not answer: %v (start it, or unset PURGE_REDIS_URL for an embedded Redis)", redisconn.Describe(redisURL), err)
		}
	} else {
		env.redis = miniredis.NewMiniRedis()
		if err := env.redis.StartAddr(RedisAddr); err != nil {
			if err := env.redis.StartAddr("127.0.0.1:0"); err != nil {
				return nil, fmt.Errorf("starting the embedded Redis: %w", err)
			}
			notes = append(notes, fmt.Sprintf("%s is taken (another Redis?): the embedded Redis is on %s instead", RedisAddr, env.redis.Addr()))
		}
		redisURL = "redis://" + env.redis.Addr() + "/0"
		os.Setenv("PURGE_REDIS_URL", redisURL)
	}

	setDefault("PURGE_ZONES", Zones)
	zones, err := tasks.ParseZones(os.Getenv("PURGE_ZONES"))
	if err != nil {
		env.Close()
		return nil, err
	}
	simulated := os.Getenv("PURGE_CLOUDFLARE_API_TOKEN") == "" && os.Getenv("PURGE_CLOUDFLARE_API_TOKEN_FILE") == ""
	if simulated {
		names := make(map[string]string, len(zones))
		for _, z := range zones {
			names[z.Name] = z.ID
		}
		env.sim = cftest.NewUnstartedServer(cftest.Config{Token: Token, ZoneNames: names, Plan: purge.Plans["free"],
			OnCall: func(c cftest.Call) { logCall(w, c) }})
		if err := env.sim.StartOn(SimulatorAddr); err != nil {
			if err := env.sim.StartOn("127.0.0.1:0"); err != nil {
				env.Close()
				return nil, fmt.Errorf("starting the Cloudflare simulator: %w", err)
			}
			notes = append(notes, fmt.Sprintf("%s is taken (wrangler dev?): the Cloudflare simulator is on %s instead", SimulatorAddr, strings.TrimPrefix(strings.TrimSuffix(env.sim.URL, "/client/v4"), "http://")))
		}
		os.Setenv("PURGE_CLOUDFLARE_API_TOKEN", Token)
		os.Setenv("PURGE_CLOUDFLARE_API_URL", env.sim.URL)
	}

	httpAddr := os.Getenv("PURGE_HTTP_ADDR")
	if httpAddr == "" {
		httpAddr = HTTPAddr
		if !free(HTTPAddr) {
			if httpAddr, err = freePort(); err != nil {
				env.Close()
				return nil, fmt.Errorf("finding a free port for the UI: %w", err)
			}
			notes = append(notes, fmt.Sprintf("%s is taken: the UI, metrics and health are on %s instead", HTTPAddr, httpAddr))
		}
		os.Setenv("PURGE_HTTP_ADDR", httpAddr)
	}

	bar := strings.Repeat("=", 72)
	fmt.Fprintf(w, "%s\n  DEVELOPMENT MODE — not for production\n", bar)
	if ownRedis {
		fmt.Fprintf(w, "  Redis: YOUR Redis at %s (PURGE_REDIS_URL) — no embedded Redis; the dev worker's queues and zones are kept there\n", redisconn.Describe(redisURL))
	} else {
		fmt.Fprintf(w, "  embedded Redis (miniredis, in memory): %s\n", env.redis.Addr())
	}
	if simulated {
		fmt.Fprintf(w, "  Cloudflare SIMULATOR (free plan limits): %s — no real purges are sent\n", env.sim.URL)
	} else {
		fmt.Fprintf(w, "  Cloudflare API: %s with your token — REAL purges\n", os.Getenv("PURGE_CLOUDFLARE_API_URL"))
	}
	fmt.Fprintf(w, "  zones: %s\n", zones)
	fmt.Fprintf(w, "  UI: http://%s/monitoring/   metrics: http://%s/metrics   health: /healthz\n", httpAddr, httpAddr)
	fmt.Fprintf(w, "  status (outbox, limits, last calls, history): http://%s/status\n", httpAddr)
	for _, n := range notes {
		fmt.Fprintf(w, "  NOTE: %s\n", n)
	}
	if redisURL == "redis://"+RedisAddr+"/0" {
		fmt.Fprintf(w, "\n  In another terminal (this is PURGE_REDIS_URL's default: no variable needed):\n")
	} else {
		fmt.Fprintf(w, "\n  !!! Redis is NOT at the default %s: in every other terminal, first run\n", RedisAddr)
	}
	fmt.Fprintf(w, "    %s\n", exportLine(redisURL))
	fmt.Fprintf(w, "\n  Try, from another terminal:\n    go run ./cmd/enqueue https://example.com/index.html --tag product-1 --zone example.com\n%s\n", bar)
	return env, nil
}

// Close stops what Start started.
func (e *Env) Close() {
	if e.sim != nil {
		e.sim.Close()
	}
	if e.redis != nil {
		e.redis.Close()
	}
}

// exportLine is the shell command that points another terminal's commands
// at redisURL: exact, unless the URL carries a password, which is not
// printed.
func exportLine(redisURL string) string {
	if u, err := url.Parse(redisURL); err == nil && u.User != nil {
		if _, has := u.User.Password(); has {
			return "export PURGE_REDIS_URL=… # the value set in this terminal (it holds a password, not printed)"
		}
	}
	v := redisURL
	if strings.ContainsAny(v, "?&;$`\"' \\!*[]{}()<>|#~") {
		v = "'" + strings.ReplaceAll(v, "'", `'\''`) + "'"
	}
	return "export PURGE_REDIS_URL=" + v
}

// ping checks that the Redis at redisURL answers.
func ping(ctx context.Context, redisURL string) error {
	rdb, _, err := redisconn.Open(redisURL, redisconn.Producer)
	if err != nil {
		return err
	}
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return rdb.Ping(ctx).Err()
}

// free reports whether addr can be listened on now.
func free(addr string) bool {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// freePort returns a loopback address with a port free now.
func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
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
