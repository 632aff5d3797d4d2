package worker

import (
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/purgeq/purgeq/batching"
	"github.com/purgeq/purgeq/internal/callback"
	"github.com/purgeq/purgeq/internal/config"
	"github.com/purgeq/purgeq/tasks"
)

// Timing of completion callbacks and repeats; not worth configuring.
const (
	// callbackTimeout bounds one delivery attempt, answer included.
	callbackTimeout = 10 * time.Second
	// callbackGiveUp: deliveries are retried (with the worker's backoff,
	// PURGE_RETRY_BASE to PURGE_RETRY_MAX) this long after the request ended.
	callbackGiveUp = time.Hour
	// followTick is how often ended requests are looked for: at most this
	// much latency before a callback or repeat is queued.
	followTick = 100 * time.Millisecond
)

// followups is what follows a request's end: the purge:callback handler
// (Sender) and the loop that queues callbacks and repeats (Follower).
type followups struct {
	sender   *callback.Sender
	follower *callback.Follower
}

// newFollowups wires them, counting deliveries in reg as
// purgeq_callbacks_total{outcome}.
func newFollowups(cfg *config.Config, rdb redis.UniversalClient, ac *asynq.Client, requests *batching.Requests, reg prometheus.Registerer, log zerolog.Logger) *followups {
	outcomes := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "purgeq_callbacks_total",
		Help: "Completion callback delivery attempts by outcome: delivered, retrying, failed (given up), refused (PURGE_CALLBACK_ALLOW)."}, []string{"outcome"})
	reg.MustRegister(outcomes)
	log = log.With().Str("component", "callbacks").Logger()
	return &followups{
		sender: callback.NewSender(callback.SenderConfig{Secret: cfg.CallbackSecret, Allow: cfg.CallbackAllow, Timeout: callbackTimeout,
			GiveUpAfter: callbackGiveUp, Observe: func(o string) { outcomes.WithLabelValues(o).Inc() }, Log: log}),
		follower: &callback.Follower{Requests: requests, Asynq: ac, Retention: cfg.RequestRetention, Tick: followTick, Log: log,
			Client: tasks.NewClient(ac, tasks.ClientOptions{Retention: cfg.RequestRetention, Redis: rdb})},
	}
}
