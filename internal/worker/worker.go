// Package worker wires the worker process: Redis, the limiter, the outbox
// and its dispatcher, the asynq server with the purge handlers, and the
// HTTP side (UI, metrics, health).
// cmd/worker only parses flags and calls Run.
package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/purgeq/purgeq/batching"
	"github.com/purgeq/purgeq/internal/config"
	"github.com/purgeq/purgeq/internal/logging"
	"github.com/purgeq/purgeq/internal/metrics"
	"github.com/purgeq/purgeq/internal/pipeline"
	"github.com/purgeq/purgeq/internal/probe"
	"github.com/purgeq/purgeq/internal/redisconn"
	"github.com/purgeq/purgeq/internal/web"
	"github.com/purgeq/purgeq/limits"
	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/tasks"
)

// Timing constants that are not worth configuring.
const (
	// pollInterval is how often an idle asynq server looks for tasks, and
	// dispatchTick how often the dispatcher looks at lanes unwoken. Both
	// bound the latency a partial batch adds beyond PURGE_BATCH_WAIT.
	pollInterval = 20 * time.Millisecond
	dispatchTick = 20 * time.Millisecond
	// strandedAfter: a hand-off older than this is re-enqueued.
	strandedAfter = 5 * time.Second
	// callRetention keeps a finished call's task (visible in the UI, and
	// its id reserved, so a late re-enqueue cannot send it twice).
	callRetention = 10 * time.Minute
)

// Run starts the worker and blocks until ctx ends, then shuts down
// gracefully within cfg.ShutdownTimeout.
func Run(ctx context.Context, cfg *config.Config, log zerolog.Logger) error {
	// Commands ride out about 20 s of a Redis outage (redisconn.Worker); a
	// call handler that meets a longer one re-schedules its task without
	// counting a failure, and every step is safe to run again.
	rdb, connOpt, err := redisconn.Open(cfg.RedisURL, redisconn.Profile{PoolSize: cfg.WorkerConcurrency() + 16, Outage: redisconn.Worker.Outage})
	if err != nil {
		return fmt.Errorf("PURGE_REDIS_URL: %w", err)
	}
	defer rdb.Close()
	if err := redisconn.WaitReady(ctx, rdb, 10*time.Second); err != nil {
		return fmt.Errorf("redis at %s: %w", redisconn.Describe(cfg.RedisURL), err)
	}

	accts, err := newAccounts(cfg, rdb, log.With().Str("component", "zones").Logger())
	if err != nil {
		return err
	}
	if err := accts.discover(ctx); err != nil {
		if purge.ClassOf(err) == purge.Misconfigured {
			// the token cannot list zones (it needs Zone Read): say so
			return fmt.Errorf("%w (give the token Zone Read, or list the zones in PURGE_ZONES or the configuration file)", err)
		}
		log.Warn().Err(err).Msg("listing zones failed; retrying in the background")
	}
	if err := accts.publish(ctx); err != nil {
		return err
	}
	if err := limits.PublishToken(ctx, rdb, cfg.AccountLimits(cfg.Accounts[0]).Token); err != nil {
		return err
	}
	ob := batching.NewOutbox(rdb, cfg.RequestRetention)
	if err := ob.IndexLanes(ctx, true); err != nil {
		return fmt.Errorf("indexing waiting lanes: %w", err)
	}
	requests, dead := batching.NewRequests(rdb, cfg.RequestRetention), batching.NewDeadLetters(rdb)
	ac := asynq.NewClientFromRedisClient(rdb)
	callTimeout := cfg.InlineWait + cfg.APITimeout + 30*time.Second
	enqueue := tasks.CallQueue{Client: ac, Timeout: callTimeout, Retention: callRetention}.Enqueue
	disp := batching.NewDispatcher(ob, enqueue, batching.DispatcherConfig{
		Route: accts.Dispatch, BatchWait: cfg.BatchWait, EagerFull: cfg.EagerFull, Window: cfg.CallWindow,
		Lease: cfg.Cooldown + cfg.RetryMax + callTimeout, Tick: dispatchTick, StrandedAfter: strandedAfter,
		EverythingInterval: cfg.EverythingMinInterval,
	}, log.With().Str("component", "dispatcher").Logger())

	backoff := pipeline.Backoff{Base: cfg.RetryBase, Max: cfg.RetryMax}
	mux := asynq.NewServeMux()
	mux.Handle(tasks.TypeRequest, &pipeline.RequestHandler{Outbox: ob, Requests: requests, Redis: rdb, Admitted: disp.Wake, Log: log})
	insp := asynq.NewInspectorFromRedisClient(rdb)
	reg := prometheus.NewRegistry()
	fu := newFollowups(cfg, rdb, ac, requests, reg, log)
	mux.Handle(tasks.TypeCallback, fu.sender)
	m := metrics.New(reg, metrics.State{Redis: rdb, Outbox: ob, Dead: dead, Inspector: insp, Accounts: accts.Metrics, Zone: accts.ZoneName,
		TopZones: cfg.MetricsTopZones, Log: log})
	archive := func(ctx context.Context, entries []batching.DeadEntry) {
		for _, e := range entries {
			payload, _ := json.Marshal(e)
			if err := tasks.ArchiveDead(ctx, ac, insp, e.ID, payload); err != nil {
				log.Warn().Err(err).Str("entry", e.ID).Msg("mirroring a dead-letter entry into the UI's archive failed (the entry itself is kept)")
			}
		}
	}
	hist, calls := batching.NewHistory(rdb, cfg.HistoryRetention), batching.NewCallLog(rdb)
	prober := probe.New(cfg.Probes, hist, func(ctx context.Context, zoneID, item string) error {
		f, err := purge.ParseFileKey(item)
		if err != nil {
			return err
		}
		producer := tasks.NewClient(ac, tasks.ClientOptions{Zones: accts.Zones()})
		_, err = producer.Enqueue(ctx, tasks.PurgeRequest{Zone: zoneID, Files: []purge.File{f}, Producer: "probe",
			Source: "verification: the edge served a copy from before the purge"})
		return err
	}, log)
	mux.Handle(tasks.TypeCall, &pipeline.CallHandler{Outbox: ob, Route: accts.Call, Unlisted: accts.Unlisted, Enqueue: enqueue, Archive: archive,
		History: hist, Probe: prober,
		InlineWait: cfg.InlineWait, MaxRetry: cfg.MaxRetry, Done: disp.Wake, Log: log,
		Observe: func(c *tasks.Call, account, outcome string, scope purge.Scope) {
			if a, ok := accts.of(c.Zone); ok {
				m.Observe(c, account, outcome, scope, a.cfg.Plan.Cap(c.Kind))
			}
			// every call that reached the API, for the status page's chart
			cctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			if err := calls.Count(cctx, account, time.Now()); err != nil {
				log.Debug().Err(err).Msg("counting a call for the status page failed")
			}
		}})
	mux.Handle(tasks.TypeDead, &pipeline.DeadHandler{Dead: dead, Retried: disp.Wake, Log: log})
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency:              cfg.WorkerConcurrency(),
		Queues:                   map[string]int{tasks.QueueCalls: 3, tasks.QueueRequests: 2, tasks.QueueDead: 1, tasks.QueueCallbacks: 1},
		TaskCheckInterval:        pollInterval,
		DelayedTaskCheckInterval: 100 * time.Millisecond,
		IsFailure:                pipeline.IsFailure,
		RetryDelayFunc:           backoff.Delay,
		ShutdownTimeout:          cfg.ShutdownTimeout,
		Logger:                   logging.Asynq{L: log.With().Str("component", "asynq").Logger()},
		LogLevel:                 asynq.WarnLevel,
	})

	webOpts := web.Options{RedisConn: connOpt, User: cfg.UIUser, Password: cfg.UIPassword,
		ReadOnly: cfg.UIReadOnly, MetricsElsewhere: cfg.MetricsAddr != "", Gatherer: reg, Redis: rdb,
		Status: &web.StatusSource{Outbox: ob, Dead: dead, History: hist, CallLog: calls, ZoneName: accts.ZoneName,
			Find: func(ctx context.Context, item, zone string) ([]batching.Entry, error) {
				return hist.Find(ctx, accts.Zones(), item, zone)
			},
			Accounts: func() []web.StatusAccount {
				out := make([]web.StatusAccount, len(accts.list))
				for i, a := range accts.list {
					out[i] = web.StatusAccount{Name: a.cfg.Name, Limits: a.limiter, Config: cfg.AccountLimits(a.cfg)}
				}
				return out
			},
		}}
	webHandler, closeWeb, err := web.Handler(webOpts)
	if err != nil {
		return err
	}
	defer closeWeb()
	// The UI's listener, and with PURGE_METRICS_ADDR one for metrics and
	// health without the UI's credentials.
	servers := []*http.Server{{Addr: cfg.HTTPAddr, Handler: webHandler, ReadHeaderTimeout: 10 * time.Second}}
	if cfg.MetricsAddr != "" {
		servers = append(servers, &http.Server{Addr: cfg.MetricsAddr, Handler: web.OpsHandler(webOpts), ReadHeaderTimeout: 10 * time.Second})
	}
	var listeners []net.Listener
	closeListeners := func() {
		for _, l := range listeners {
			l.Close()
		}
	}
	for i, s := range servers {
		ln, err := net.Listen("tcp", s.Addr)
		if err != nil {
			closeListeners()
			return fmt.Errorf("%s: %w", [...]string{"PURGE_HTTP_ADDR", "PURGE_METRICS_ADDR"}[i], err)
		}
		listeners = append(listeners, ln)
	}
	if err := srv.Start(mux); err != nil {
		closeListeners()
		return err
	}
	ev := log.Info().Str("http", listeners[0].Addr().String()).Str("ui", "http://"+listeners[0].Addr().String()+web.UIPath+"/").
		Str("status", "http://"+listeners[0].Addr().String()+web.StatusPath)
	if len(listeners) > 1 {
		ev = ev.Str("metrics", "http://"+listeners[1].Addr().String()+"/metrics")
	}
	ev.Int("accounts", len(accts.list)).Int("zones", len(accts.Zones())).Msg("worker started")
	for _, a := range accts.list {
		ev := log.Info().Str("account", a.cfg.Name).Str("plan", a.cfg.Plan.Name).Str("global_limit", a.cfg.Global.String()).
			Str("token", limits.Fingerprint(a.cfg.Token))
		if a.cfg.Discovers() {
			ev = ev.Str("zones", "listed through the API")
		} else {
			ev = ev.Int("zones", len(a.cfg.Zones))
		}
		ev.Msg("account")
	}

	var wg sync.WaitGroup
	dctx, stopDispatch := context.WithCancel(context.Background())
	wg.Go(func() { disp.Run(dctx) })
	wg.Go(func() { fu.follower.Run(dctx) })
	wg.Go(func() { prober.Run(dctx) })
	wg.Go(func() { accts.runDiscovery(dctx, cfg.ZonesRefresh) })
	wg.Go(func() { m.Run(dctx) })
	for i, s := range servers {
		wg.Go(func() {
			if err := s.Serve(listeners[i]); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error().Err(err).Str("addr", s.Addr).Msg("HTTP server failed")
			}
		})
	}

	<-ctx.Done()
	log.Info().Dur("timeout", cfg.ShutdownTimeout).Msg("shutting down: finishing running tasks")
	stopDispatch()
	srv.Shutdown()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, s := range servers {
		s.Shutdown(sctx)
	}
	wg.Wait()
	ac.Close()
	log.Info().Msg("worker stopped")
	return nil
}
