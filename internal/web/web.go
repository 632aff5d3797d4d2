// Package web is the worker's HTTP side: the asynq web UI (asynqmon) at
// /monitoring/ behind basic auth, Prometheus metrics at /metrics, and
// /healthz (alive) and /readyz (Redis reachable).
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
	Gatherer prometheus.Gatherer
	Redis    redis.UniversalClient
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
	var uiHandler http.Handler = ui
	if o.User != "" && o.Password != "" {
		uiHandler = basicAuth(ui, o.User, o.Password)
	}
	mux.Handle(UIPath+"/", uiHandler)
	mux.Handle("GET /metrics", promhttp.HandlerFor(o.Gatherer, promhttp.HandlerOpts{}))
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
	return mux, ui.Close, nil
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
