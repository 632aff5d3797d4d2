// Package web is the worker's HTTP side: the asynq web UI (asynqmon) at
// /monitoring/ behind basic auth and refusing cross-site changes, the
// status page at /status behind the same (what the UI cannot show: the
// outbox, the limits, the purge history), Prometheus metrics at /metrics,
// and /healthz (alive) and /readyz (Redis reachable). Metrics and health
// may also be served on an address of their own (OpsHandler,
// PURGE_METRICS_ADDR), without the UI's credentials.
package web

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"time"

	"github.com/hibiken/asynq"
	"github.com/hibiken/asynqmon"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/purgeq/purgeq/tasks"
)

// UIPath is where the asynq web UI is served.
const UIPath = "/monitoring"

// Options configure the handler.
type Options struct {
	// RedisConn is the Redis the UI opens its own connections to.
	RedisConn asynq.RedisConnOpt
	// User and Password protect the UI with basic auth when both are set.
	User, Password string
	// ReadOnly hides the UI's buttons that change tasks.
	ReadOnly bool
	// MetricsElsewhere leaves /metrics out of Handler: OpsHandler serves it
	// on its own address (PURGE_METRICS_ADDR). Health stays on both.
	MetricsElsewhere bool
	Gatherer         prometheus.Gatherer
	Redis            redis.UniversalClient
	// Status, when set, serves the status page at /status, with the UI's
	// credentials.
	Status *StatusSource
}

// Handler serves the worker's HTTP side. Close the returned closer on shutdown.
func Handler(o Options) (http.Handler, func() error, error) {
	ui := asynqmon.New(asynqmon.Options{
		RootPath:         UIPath,
		RedisConnOpt:     o.RedisConn,
		ReadOnly:         o.ReadOnly,
		PayloadFormatter: asynqmon.PayloadFormatterFunc(tasks.Describe),
	})
	mux := http.NewServeMux()
	// SameOrigin outermost, so that it holds whether or not basic auth is
	// configured (a browser sends cached credentials along with a forged
	// request, and an unauthenticated UI on 127.0.0.1 is reachable from any
	// page).
	protect := func(h http.Handler) http.Handler {
		if o.User != "" && o.Password != "" {
			h = basicAuth(h, o.User, o.Password)
		}
		return SameOrigin(h)
	}
	mux.Handle(UIPath+"/", protect(ui))
	if o.Status != nil {
		mux.Handle("GET "+StatusPath, protect(statusHandler(o.Status)))
	}
	if !o.MetricsElsewhere {
		mux.Handle("GET /metrics", metricsHandler(o))
	}
	health(mux, o)
	return mux, ui.Close, nil
}

// OpsHandler serves /metrics, /healthz and /readyz, without credentials,
// for an address of their own (PURGE_METRICS_ADDR): probes and scrapers
// need no UI credentials, and the UI need not be reachable from them.
func OpsHandler(o Options) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metricsHandler(o))
	health(mux, o)
	return mux
}

func metricsHandler(o Options) http.Handler {
	return promhttp.HandlerFor(o.Gatherer, promhttp.HandlerOpts{})
}

func health(mux *http.ServeMux, o Options) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := o.Redis.Ping(ctx).Err(); err != nil {
			http.Error(w, "redis unreachable: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
}

// SameOrigin refuses, with 403, a state-changing request (any method but
// GET, HEAD and OPTIONS: the UI API's pause, delete, run…) that a browser
// marks as coming from another site, whatever credentials it carries:
// Sec-Fetch-Site must be "same-origin" or "none" when present; without it
// (older browsers) an Origin header, when present, must name the request's
// Host exactly (host and port; the scheme is not compared, since behind a
// TLS-terminating proxy the worker cannot know which one the browser used,
// and every browser that would send a different scheme for the same host
// also sends Sec-Fetch-Site). A request with neither header (curl, scripts)
// is no browser's and passes on to basic auth. This is net/http's
// CrossOriginProtection with no trusted origins and no bypass.
func SameOrigin(next http.Handler) http.Handler {
	return http.NewCrossOriginProtection().Handler(next)
}

// basicAuth compares credentials in constant time (hashes first, so that
// lengths do not leak either).
func basicAuth(next http.Handler, user, password string) http.Handler {
	wantUser, wantPass := sha256.Sum256([]byte(user)), sha256.Sum256([]byte(password))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		gotUser, gotPass := sha256.Sum256([]byte(u)), sha256.Sum256([]byte(p))
		if !ok || subtle.ConstantTimeCompare(gotUser[:], wantUser[:])&subtle.ConstantTimeCompare(gotPass[:], wantPass[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Basic realm="purgeq", charset="UTF-8"`)
			http.Error(w, "authentication required", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}
