// Package pipeline holds the worker's task handlers. The flow of one call
// reads as a sentence in CallHandler.ProcessTask: acquire the limits → call
// Cloudflare → classify → record. Every outcome maps onto asynq once, here:
// a rate-limit wait is a non-failure re-schedule (Wait), a transient failure
// an ordinary error retried with backoff, a permanent one a dead-letter
// entry and asynq.SkipRetry (so the task shows as archived in the UI).
package pipeline

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/rs/zerolog"

	"github.com/purgeq/purgeq/batching"
	"github.com/purgeq/purgeq/internal/redisconn"
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

// Account is what a call needs of its zone's Cloudflare account: the
// account's limits, its API token's client and its cooldown
// (PURGE_COOLDOWN, or the account's own).
type Account struct {
	Name     string
	Limiter  Limiter
	API      API
	Cooldown time.Duration
}

// Limiter is what the call handler needs of limits.Limiter.
type Limiter interface {
	Acquire(ctx context.Context, c limits.Need) (limits.Result, error)
	Cooldown(ctx context.Context, scope purge.Scope, d time.Duration) (time.Time, error)
	CooldownFor(e *purge.Error, c limits.Need, globalCooldown time.Duration) time.Duration
	Observe(ctx context.Context, remaining int, reset time.Duration, acquired time.Time) error
}

// CallStore is what the call handler needs of the outbox's state
// (*batching.Outbox): markers, outcomes and hand-offs. Tests put a fake
// here to check every decision without Redis.
type CallStore interface {
	Recorded(ctx context.Context, callID string) (bool, []batching.DeadEntry, error)
	MarkSent(ctx context.Context, callID, attempt string) (bool, error)
	Unsent(ctx context.Context, callID string) error
	FirstFailure(ctx context.Context, callID string) (time.Time, error)
	Record(ctx context.Context, c *tasks.Call, purged, dead []int, f batching.Failure, resend []*tasks.Call) ([]batching.DeadEntry, error)
	InFlight(ctx context.Context, ids ...string) (map[string][]byte, error)
	Handoff(ctx context.Context, callID string) error
}

// CallHandler runs purge:call tasks.
type CallHandler struct {
	Outbox CallStore
	// Route finds the account of a zone id; false for a zone no account
	// holds (any more): its calls are dead-lettered with advice.
	Route func(zoneID string) (*Account, bool)
	// Unlisted says how long a call of a zone Route does not know should
	// wait for this worker to list its zones again (another worker may
	// have listed it first); 0 or nil: not at all.
	Unlisted func(zoneID string) time.Duration
	// Enqueue hands the re-sent part of a failed call back to the queue.
	Enqueue batching.Enqueuer
	// History keeps accepted calls (batching.History); nil keeps none.
	History interface {
		Remember(ctx context.Context, c *tasks.Call, account, cloudflareID string) error
	}
	// Probe hears of every accepted call (verification and warming,
	// internal/probe); nil: none.
	Probe interface {
		Accepted(c *tasks.Call, at time.Time)
	}
	// Archive mirrors new dead-letter entries into asynq's archive.
	Archive func(ctx context.Context, entries []batching.DeadEntry)
	// InlineWait is the longest wait for the limits spent in-process.
	InlineWait time.Duration
	// MaxRetry is how many times a call is retried after a transient
	// failure (PURGE_MAX_RETRY) before its items are dead-lettered. Waits
	// for the limits never count.
	MaxRetry int
	// Done is called after each finished call (to wake the dispatcher).
	Done func()
	// Observe sees every API outcome (accepted, rate_limited, transient,
	// permanent, misconfigured) for metrics; scope is set for rate_limited.
	Observe func(c *tasks.Call, account, outcome string, scope purge.Scope)
	Log     zerolog.Logger

	loud loudOnce
}

// unlistedPatience is how long a call waits for its zone to be listed
// before it is dead-lettered.
const unlistedPatience = time.Hour

// redisPause is how long a call waits when Redis failed it.
const redisPause = 2 * time.Second

// ProcessTask runs the call. Only Cloudflare's transient failures count
// against the retry budget: Redis out of reach (an outage, a failover)
// makes the task wait and come back, like busy limits, since every step is
// safe to run again. Other errors are failures, retried with backoff and
// logged by asynq.
func (h *CallHandler) ProcessTask(ctx context.Context, t *asynq.Task) error {
	err := h.process(ctx, t)
	if err != nil && ctx.Err() == nil && redisconn.Unreachable(err) {
		return &Wait{D: redisPause, Reason: "redis unreachable: " + err.Error()}
	}
	return err
}

// process: acquire → call → classify → record.
func (h *CallHandler) process(ctx context.Context, t *asynq.Task) error {
	call, err := tasks.DecodeCall(t.Payload())
	if err != nil {
		return fmt.Errorf("%v: %w", err, asynq.SkipRetry)
	}
	log := h.Log.With().Str("call", call.ID).Str("zone", call.Zone).Str("kind", string(call.Kind)).Int("items", len(call.Items)).Logger()
	recorded, entries, err := h.Outbox.Recorded(ctx, call.ID)
	if err != nil {
		return err
	}
	if recorded {
		// A re-run after a crash (or a lost acknowledgement): the outcome
		// is in; finish what the first run may not have.
		log.Info().Msg("call recorded before; finishing its hand-off")
		return h.finish(ctx, log, call.ID, entries)
	}
	acct, ok := h.Route(call.Zone)
	if !ok && h.Unlisted != nil && time.Since(time.UnixMilli(call.Oldest)) < unlistedPatience {
		if d := h.Unlisted(call.Zone); d > 0 {
			return &Wait{D: d, Reason: "zone " + call.Zone + " is not listed by this worker yet"}
		}
	}
	if !ok {
		advice := fmt.Sprintf("zone %s is in no configured account (removed from the configuration while its items waited?); add it back and retry the entry", call.Zone)
		log.Error().Str("outcome", "misconfigured").Msg(advice)
		return h.fail(ctx, log, call, nil, all(len(call.Items)), batching.Failure{Reason: advice, Attempts: 1})
	}
	log = log.With().Str("account", acct.Name).Logger()
	need := limits.Need{Kind: call.Kind, Items: len(call.Items), High: call.Priority == "high", Lane: call.Zone}
	acquired, err := h.acquire(ctx, acct.Limiter, need)
	if err != nil {
		return err
	}
	first, err := h.Outbox.MarkSent(ctx, call.ID, randomToken())
	if err != nil {
		return err
	}
	if !first {
		log.Warn().Msg("re-sending a call whose earlier attempt had an unknown outcome (crash, timeout or reset): its items may be purged twice")
	}
	acc, err := acct.API.Purge(ctx, call.Zone, call.Batch())
	h.observeRate(ctx, log, acct, acquired, acc, err)
	outcome, scope := "accepted", purge.Scope("")
	if err != nil {
		c := purge.ClassOf(err)
		outcome = c.String()
		if c == purge.RateLimited {
			var pe *purge.Error
			errors.As(err, &pe)
			scope = pe.Scope
		}
	}
	h.Observe(call, acct.Name, outcome, scope)
	return h.record(ctx, log, call, acct, need, acc, err)
}

// observeRate folds Cloudflare's own count of the token's window (its
// Ratelimit header) into the limits: the token may be used elsewhere too.
func (h *CallHandler) observeRate(ctx context.Context, log zerolog.Logger, acct *Account, acquired time.Time, acc purge.Accepted, err error) {
	rate := acc.Rate
	var pe *purge.Error
	if errors.As(err, &pe) {
		rate = pe.Rate
	}
	if rate == nil {
		return
	}
	if err := acct.Limiter.Observe(ctx, rate.Remaining, rate.Reset, acquired); err != nil {
		log.Warn().Err(err).Msg("keeping Cloudflare's count of the window failed")
	}
}

// acquire takes the call's limits, sleeping for short waits (for at most
// about four InlineWaits in all) and re-scheduling the task for long ones. It returns when they were taken
// (the Redis clock).
func (h *CallHandler) acquire(ctx context.Context, lim Limiter, need limits.Need) (time.Time, error) {
	start := time.Now()
	for {
		r, err := lim.Acquire(ctx, need)
		if err != nil {
			return time.Time{}, err
		}
		if r.OK {
			return r.At, nil
		}
		if time.Since(start) > 4*h.InlineWait {
			// short waits one after another for long: come back later,
			// well before the task's deadline
			return time.Time{}, &Wait{D: r.Wait, Reason: r.Blocker}
		}
		if r.Wait > h.InlineWait {
			// Come back a little early (asynq schedules in whole seconds)
			// and wait the rest in-process.
			return time.Time{}, &Wait{D: r.Wait - h.InlineWait/2, Reason: r.Blocker}
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-time.After(r.Wait):
		}
	}
}

// record maps the outcome onto the outbox and asynq.
func (h *CallHandler) record(ctx context.Context, log zerolog.Logger, call *tasks.Call, acct *Account, need limits.Need, acc purge.Accepted, err error) error {
	if err == nil {
		// Cloudflare accepted the call: recording it must not fail for a
		// blip, or the re-run would purge the items again.
		for {
			_, err := h.Outbox.Record(ctx, call, all(len(call.Items)), nil, batching.Failure{}, nil)
			if err == nil {
				break
			}
			log.Warn().Err(err).Msg("recording an accepted call failed; trying again")
			select {
			case <-ctx.Done():
				return err
			case <-time.After(redisPause):
			}
		}
		if h.History != nil {
			if err := h.History.Remember(ctx, call, acct.Name, acc.ID); err != nil {
				log.Warn().Err(err).Msg("keeping the call in the purge history failed (it was purged)")
			}
		}
		if h.Probe != nil {
			h.Probe.Accepted(call, time.Now())
		}
		log.Info().Str("outcome", "accepted").Str("cf_id", acc.ID).Int64("waited_ms", time.Now().UnixMilli()-call.Oldest).Msg("purged")
		h.Done()
		return nil
	}
	var pe *purge.Error
	if !errors.As(err, &pe) {
		pe = &purge.Error{Class: purge.Transient, Err: err}
	}
	if pe.Status != 0 && pe.Err == nil {
		// Cloudflare answered with a definite failure: nothing was purged,
		// so the next attempt is no duplicate.
		if err := h.Outbox.Unsent(ctx, call.ID); err != nil {
			return err
		}
	}
	switch pe.Class {
	case purge.RateLimited:
		if pe.RetryAfter > limits.MaxRetryAfter {
			log.Warn().Dur("retry_after", pe.RetryAfter).Dur("kept", limits.MaxRetryAfter).Msg("Cloudflare's Retry-After is beyond any cooldown it documents; waiting the longest one kept instead")
		}
		d := acct.Limiter.CooldownFor(pe, need, acct.Cooldown)
		end, err := acct.Limiter.Cooldown(ctx, pe.Scope, d)
		if err != nil {
			return err
		}
		log.Warn().Str("outcome", "rate_limited").Str("scope", string(pe.Scope)).Int("code", pe.Code).Time("until", end).Msg("429: cooldown started")
		return &Wait{D: time.Until(end), Reason: "cooldown:" + string(pe.Scope)}
	case purge.Transient:
		firstFailed, err := h.Outbox.FirstFailure(ctx, call.ID)
		if err != nil {
			return err
		}
		// asynq counts failures only (transient errors, crashes), never waits
		retried, _ := asynq.GetRetryCount(ctx)
		if retried < h.MaxRetry {
			log.Warn().Str("outcome", "transient").Err(pe).Int("attempt", retried+1).Msg("transient failure; will retry")
			return pe
		}
		return h.fail(ctx, log, call, nil, all(len(call.Items)), batching.Failure{
			Reason: fmt.Sprintf("gave up after %d attempts; last error: %v", retried+1, pe), Code: pe.Code, Message: pe.Message,
			Attempts: retried + 1, FirstFailed: firstFailed})
	case purge.Misconfigured:
		advice := configAdvice(pe, call.Zone)
		if h.loud.first(fmt.Sprintf("%d/%s", pe.Code, call.Zone), 5*time.Minute) {
			log.Error().Str("outcome", "misconfigured").Int("code", pe.Code).Msg(advice)
		}
		return h.fail(ctx, log, call, nil, all(len(call.Items)), batching.Failure{Reason: advice, Code: pe.Code, Message: pe.Message, Attempts: 1})
	}
	return h.isolate(ctx, log, call, pe)
}

// isolate handles a permanent failure: the items Cloudflare named are
// dead-lettered and the rest sent again; when it named none, the batch is
// split in halves until the culprit is alone.
func (h *CallHandler) isolate(ctx context.Context, log zerolog.Logger, call *tasks.Call, pe *purge.Error) error {
	f := batching.Failure{Reason: "Cloudflare refused the item: " + pe.Message, Code: pe.Code, Message: pe.Message, Attempts: 1}
	named := map[string]bool{}
	for _, it := range pe.Items {
		named[it] = true
	}
	var dead, rest []int
	for i, it := range call.Items {
		if named[it] {
			dead = append(dead, i)
		} else {
			rest = append(rest, i)
		}
	}
	switch {
	case len(dead) > 0:
		return h.fail(ctx, log, call, []*tasks.Call{call.Sub(tasks.SubRest, rest)}, dead, f)
	case len(call.Items) == 1:
		return h.fail(ctx, log, call, nil, []int{0}, f)
	}
	half := len(call.Items) / 2
	log.Warn().Int("code", pe.Code).Msg("permanent failure naming no item: splitting the batch to isolate it")
	return h.fail(ctx, log, call, []*tasks.Call{call.Sub(tasks.SubFirstHalf, rest[:half]), call.Sub(tasks.SubSecondHalf, rest[half:])}, nil, f)
}

// fail records the dead items and puts the re-sent parts in flight in one
// step, then hands those to the queue and mirrors the dead-letter entries
// into the archive.
func (h *CallHandler) fail(ctx context.Context, log zerolog.Logger, call *tasks.Call, resend []*tasks.Call, dead []int, f batching.Failure) error {
	resend = slices.DeleteFunc(resend, func(sub *tasks.Call) bool { return len(sub.Items) == 0 })
	entries, err := h.Outbox.Record(ctx, call, nil, dead, f, resend)
	if err != nil {
		return err
	}
	if len(dead) > 0 {
		log.Error().Str("outcome", "dead").Int("dead", len(dead)).Int("code", f.Code).Str("reason", f.Reason).Msg("items dead-lettered")
	}
	return h.finish(ctx, log, call.ID, entries)
}

// finish hands a recorded call's re-sent parts to the queue and mirrors
// its dead-letter entries. Both are safe to repeat; what a crash
// interrupts, a re-run of the task (or the dispatcher's reaper) completes.
func (h *CallHandler) finish(ctx context.Context, log zerolog.Logger, callID string, entries []batching.DeadEntry) error {
	inflight, err := h.Outbox.InFlight(ctx, tasks.SubCallIDs(callID)...)
	if err != nil {
		return err
	}
	for id, payload := range inflight {
		if err := h.Enqueue(ctx, id, payload); err != nil {
			return err
		}
		if err := h.Outbox.Handoff(ctx, id); err != nil {
			log.Warn().Err(err).Str("sub_call", id).Msg("clearing in-flight record failed; the reaper will clear it")
		}
	}
	h.Archive(ctx, entries)
	h.Done()
	return nil
}

// randomToken names one attempt of a call.
func randomToken() string {
	var b [8]byte
	crand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func all(n int) []int {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	return idx
}

// configAdvice says what an operator must fix.
func configAdvice(pe *purge.Error, zone string) string {
	switch {
	case pe.Code == purge.CodeNoRoute || pe.Code == purge.CodeNoRouteMethod:
		return fmt.Sprintf("Cloudflare does not know zone id %s (code %d): fix PURGE_ZONES, then run `enqueue dlq retry --all`", zone, pe.Code)
	case pe.Status >= 300 && pe.Status < 400:
		return pe.Message + ", then run `enqueue dlq retry --all`"
	}
	return fmt.Sprintf("Cloudflare refused the API token for zone %s (HTTP %d, code %d): check that PURGE_CLOUDFLARE_API_TOKEN is valid and has the Cache Purge permission on that zone, then run `enqueue dlq retry --all`", zone, pe.Status, pe.Code)
}

// loudOnce lets a message through once per key and interval.
type loudOnce struct {
	mu   sync.Mutex
	last map[string]time.Time
}

func (l *loudOnce) first(key string, every time.Duration) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last == nil {
		l.last = map[string]time.Time{}
	}
	if time.Since(l.last[key]) < every {
		return false
	}
	l.last[key] = time.Now()
	return true
}

// DeadHandler runs a purge:dead task an operator started from the UI:
// it retries the dead-letter entry the task mirrors.
type DeadHandler struct {
	Dead    *batching.DeadLetters
	Retried func()
	Log     zerolog.Logger
}

// ProcessTask retries the entry.
func (h *DeadHandler) ProcessTask(ctx context.Context, t *asynq.Task) error {
	var e batching.DeadEntry
	if err := json.Unmarshal(t.Payload(), &e); err != nil {
		return fmt.Errorf("purge:dead payload: %v: %w", err, asynq.SkipRetry)
	}
	n, err := h.Dead.Retry(ctx, []string{e.ID})
	if err != nil {
		return err
	}
	h.Log.Info().Str("entry", e.ID).Int("retried", n).Msg("dead-letter entry retried from the UI")
	h.Retried()
	return nil
}
