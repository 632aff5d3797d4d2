// Package pipeline holds the worker's task handlers. The flow of one call
// reads as a sentence in CallHandler.ProcessTask: acquire the limits → call
// Cloudflare → classify → record. Every outcome maps onto asynq once, here:
// a rate-limit wait is a non-failure re-schedule (Wait), a transient failure
// an ordinary error retried with backoff, a permanent one a dead-letter
// entry and asynq.SkipRetry (so the task shows as archived in the UI).
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/hibiken/asynq"
	"github.com/rs/zerolog"

	"github.com/purgeq/purgeq/batching"
	"github.com/purgeq/purgeq/limits"
	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/tasks"
)

// Wait re-schedules a task after D without counting a failure: the limits
// are busy or a cooldown is in force.
type Wait struct {
	D      time.Duration
	Reason string
}

func (w *Wait) Error() string {
	return fmt.Sprintf("waiting %s for %s", w.D.Round(time.Millisecond), w.Reason)
}

// IsFailure is asynq's Config.IsFailure: a Wait is not a failure.
func IsFailure(err error) bool {
	var w *Wait
	return !errors.As(err, &w)
}

// Backoff is exponential with jitter: attempt n waits between half and all
// of min(max, base·2ⁿ).
type Backoff struct {
	Base, Max time.Duration
}

// Delay is asynq's Config.RetryDelayFunc: a Wait's own delay, else backoff.
func (b Backoff) Delay(n int, err error, _ *asynq.Task) time.Duration {
	var w *Wait
	if errors.As(err, &w) {
		return w.D
	}
	d := b.Max
	if n < 30 && b.Base<<n < b.Max {
		d = b.Base << n
	}
	return d/2 + rand.N(d/2+1)
}

// API is the Cloudflare client the call handler needs.
type API interface {
	Purge(ctx context.Context, zoneID string, b purge.Batch) (purge.Accepted, error)
}

// Limiter is what the call handler needs of limits.Limiter.
type Limiter interface {
	Acquire(ctx context.Context, c limits.Call) (limits.Result, error)
	Cooldown(ctx context.Context, scope purge.Scope, d time.Duration) (time.Time, error)
	CooldownFor(e *purge.Error, c limits.Call, globalCooldown time.Duration) time.Duration
}

// RequestHandler admits purge:request tasks into the outbox.
type RequestHandler struct {
	Outbox *batching.Outbox
	// Admitted is called after each admission (to wake the dispatcher).
	Admitted func()
	Log      zerolog.Logger
}

// ProcessTask admits one request.
func (h *RequestHandler) ProcessTask(ctx context.Context, t *asynq.Task) error {
	req, err := tasks.DecodeRequest(t.Payload())
	if err != nil {
		return fmt.Errorf("%v: %w", err, asynq.SkipRetry)
	}
	first, err := h.Outbox.Admit(ctx, req)
	if err != nil {
		return err
	}
	h.Log.Debug().Str("request", req.ID).Int("items", req.Total()).Bool("first", first).Msg("request admitted")
	h.Admitted()
	return nil
}

// CallHandler runs purge:call tasks.
type CallHandler struct {
	Outbox  *batching.Outbox
	Limiter Limiter
	API     API
	// InlineWait is the longest wait for the limits spent in-process.
	InlineWait time.Duration
	// GlobalCooldown is PURGE_COOLDOWN.
	GlobalCooldown time.Duration
	// Done is called after each finished call (to wake the dispatcher).
	Done func()
	Log  zerolog.Logger
}

// ProcessTask: acquire → call → classify → record.
func (h *CallHandler) ProcessTask(ctx context.Context, t *asynq.Task) error {
	call, err := tasks.DecodeCall(t.Payload())
	if err != nil {
		return fmt.Errorf("%v: %w", err, asynq.SkipRetry)
	}
	log := h.Log.With().Str("call", call.ID).Str("zone", call.Zone).Str("kind", string(call.Kind)).Int("items", len(call.Items)).Logger()
	need := limits.Call{Kind: call.Kind, Items: len(call.Items)}
	if err := h.acquire(ctx, need); err != nil {
		return err
	}
	acc, err := h.API.Purge(ctx, call.Zone, call.Batch())
	return h.record(ctx, log, call, need, acc, err)
}

// acquire takes the call's limits, sleeping for short waits and
// re-scheduling the task for long ones.
func (h *CallHandler) acquire(ctx context.Context, need limits.Call) error {
	for {
		r, err := h.Limiter.Acquire(ctx, need)
		if err != nil {
			return err
		}
		if r.OK {
			return nil
		}
		if r.Wait > h.InlineWait {
			// Come back a little early (asynq schedules in whole seconds)
			// and wait the rest in-process.
			return &Wait{D: r.Wait - h.InlineWait/2, Reason: r.Blocker}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(r.Wait):
		}
	}
}

// record maps the outcome onto the outbox and asynq.
func (h *CallHandler) record(ctx context.Context, log zerolog.Logger, call *tasks.Call, need limits.Call, acc purge.Accepted, err error) error {
	if err == nil {
		if err := h.Outbox.Purged(ctx, call); err != nil {
			return err
		}
		log.Info().Str("outcome", "accepted").Str("cf_id", acc.ID).Int64("waited_ms", time.Now().UnixMilli()-call.Oldest).Msg("purged")
		h.Done()
		return nil
	}
	var pe *purge.Error
	if !errors.As(err, &pe) {
		pe = &purge.Error{Class: purge.Transient, Err: err}
	}
	switch pe.Class {
	case purge.RateLimited:
		d := h.Limiter.CooldownFor(pe, need, h.GlobalCooldown)
		end, cerr := h.Limiter.Cooldown(ctx, pe.Scope, d)
		if cerr != nil {
			return cerr
		}
		log.Warn().Str("outcome", "rate_limited").Str("scope", string(pe.Scope)).Int("code", pe.Code).Time("until", end).Msg("429: cooldown started")
		return &Wait{D: time.Until(end), Reason: "cooldown:" + string(pe.Scope)}
	case purge.Transient:
		retried, _ := asynq.GetRetryCount(ctx)
		maxRetry, _ := asynq.GetMaxRetry(ctx)
		if retried < maxRetry {
			log.Warn().Str("outcome", "transient").Err(pe).Int("attempt", retried+1).Msg("transient failure; will retry")
			return pe
		}
		return h.dead(ctx, log, call, pe, retried+1, "transient failures exhausted the retries")
	}
	return h.dead(ctx, log, call, pe, 1, pe.Class.String())
}

// dead dead-letters the whole call and archives its task.
func (h *CallHandler) dead(ctx context.Context, log zerolog.Logger, call *tasks.Call, pe *purge.Error, attempts int, reason string) error {
	now := time.Now().UnixMilli()
	entry := batching.DeadEntry{Reason: reason, Code: pe.Code, Message: pe.Error(), Attempts: attempts, FirstFailed: now, LastFailed: now}
	if err := h.Outbox.Dead(ctx, call, entry); err != nil {
		return err
	}
	log.Error().Str("outcome", "dead").Int("code", pe.Code).Err(pe).Msg("batch dead-lettered")
	h.Done()
	return fmt.Errorf("%v: %w", pe, asynq.SkipRetry)
}
