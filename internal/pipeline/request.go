package pipeline

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/purgeq/purgeq/batching"
	"github.com/purgeq/purgeq/tasks"
)

// repeatStagingTTL bounds how long a streamed request's chunks wait for its
// repeat: the week a request that makes no progress is kept, plus the
// longest repeat wait (tasks.MaxDelay).
const repeatStagingTTL = 7*24*time.Hour + tasks.MaxDelay

// notBeforeSleep: a request task that runs before its NotBefore by this
// worker's clock waits in-process up to this long, else it is re-scheduled.
const notBeforeSleep = 2 * time.Second

// RequestHandler admits purge:request tasks into the outbox.
type RequestHandler struct {
	Outbox   *batching.Outbox
	Requests *batching.Requests
	// Redis holds streamed requests' staged chunks.
	Redis redis.Cmdable
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
	if wait := time.Until(time.UnixMilli(req.NotBefore)); wait > 0 {
		// due early by this worker's clock (the producer's may be ahead)
		if wait > notBeforeSleep {
			return &Wait{D: wait, Reason: "the request's delay"}
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	// a callback, a repeat: recorded before any item can end the request
	if err := h.Requests.Follow(ctx, req); err != nil {
		return err
	}
	if req.Chunks == 0 {
		if err := h.Outbox.Admit(ctx, req, 0, 1); err != nil {
			return err
		}
	} else if err := h.admitStaged(ctx, req); err != nil {
		return err
	}
	zones := make([]string, 0, len(req.Zones))
	for z := range req.Zones {
		zones = append(zones, z)
	}
	h.Log.Info().Str("request", req.ID).Str("producer", req.Producer).Str("source", req.Source).Strs("zones", zones).
		Int("items", req.Total()).Msg("request admitted")
	h.Admitted()
	return nil
}

// admitStaged admits a streamed request chunk by chunk; a retried task
// skips the chunks admitted before. The chunks are deleted after, or kept
// for the request's repeat. A chunk that is missing (its staging
// expired before admission) fails the request loudly: its status says
// failed, with the reason, and the error is logged.
func (h *RequestHandler) admitStaged(ctx context.Context, req *tasks.Request) error {
	key := req.StagingKey()
	for i := range req.Chunks {
		raw, err := h.Redis.HGet(ctx, key, strconv.Itoa(i)).Bytes()
		if errors.Is(err, redis.Nil) {
			if st, serr := h.Requests.Admitted(ctx, req.ID); serr == nil && st.Total == req.Items {
				return nil // admitted in full before, and the staging deleted
			}
			reason := fmt.Sprintf("chunk %d of %d is missing from staging (it expired or was deleted before the worker admitted it): %d of the request's %d items were not queued",
				i, req.Chunks, req.Items-admittedTotal(ctx, h.Requests, req.ID), req.Items)
			if err := h.Requests.Fail(ctx, req.ID, reason); err != nil {
				return err
			}
			h.Log.Error().Str("request", req.ID).Msg("request failed: " + reason)
			return fmt.Errorf("request %s: %s: %w", req.ID, reason, asynq.SkipRetry)
		}
		if err != nil {
			return err
		}
		chunk, err := tasks.DecodeRequest(raw)
		if err != nil {
			return fmt.Errorf("%v: %w", err, asynq.SkipRetry)
		}
		// a repeat admits the chunks staged under the request it repeats
		chunk.ID, chunk.Producer, chunk.Source, chunk.Priority = req.ID, req.Producer, req.Source, req.Priority
		if err := h.Outbox.Admit(ctx, chunk, i, req.Chunks); err != nil {
			return err
		}
		h.Admitted()
	}
	if req.RepeatAfter > 0 {
		// the repeat (tasks.Request.Repeat) admits the same chunks later
		_, err := h.Redis.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Rename(ctx, key, req.Repeat().StagingKey())
			p.Expire(ctx, req.Repeat().StagingKey(), repeatStagingTTL)
			return nil
		})
		return err
	}
	return h.Redis.Del(ctx, key).Err()
}

// admittedTotal is how many of a request's items are in the outbox so far.
func admittedTotal(ctx context.Context, rq *batching.Requests, id string) int {
	st, err := rq.Admitted(ctx, id)
	if err != nil {
		return 0
	}
	return st.Total
}
