package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// stagingTTL bounds how long an uncommitted stream's chunks stay in Redis;
// Commit lifts it once the request is queued (the worker deletes the
// chunks when it has admitted them).
const stagingTTL = 24 * time.Hour

// Stream queues a request too large for one task (a deploy that changed
// 200,000 URLs) under one id: Add stages chunks in Redis, Commit queues one
// purge:request task that refers to them. Nothing is queued before Commit,
// so a producer that fails half-way leaves nothing half-queued (Abort, or
// the staging TTL, clears what it staged). Chunks are staged under the
// invocation's nonce: a re-run with the same idempotency key stages and
// aborts its own chunks, never those of the run that was queued.
type Stream struct {
	c      *Client
	rdb    redis.Cmdable
	req    Request
	chunks int
	// delay holds the request back from Commit on (Follow).
	delay time.Duration
}

// NewStream starts a streamed request on rdb (the Redis the queue uses).
func (c *Client) NewStream(rdb redis.Cmdable, soft bool, idempotencyKey string) *Stream {
	return &Stream{c: c, rdb: rdb, req: Request{ID: requestID(idempotencyKey), Idempotent: idempotencyKey != "", Nonce: newID(), Soft: soft, Producer: producerOr("")}}
}

// Attribute records who queued the request and who or what asked for it
// (PurgeRequest.Producer, Source); call it before Commit.
func (s *Stream) Attribute(producer, source string) {
	s.req.Producer, s.req.Source = producerOr(producer), source
}

// Prioritise sets the request's priority (high, normal or bulk); call it
// before Commit.
func (s *Stream) Prioritise(priority string) { s.req.Priority = priorityOf(priority) }

// Items is how many items the stream staged so far.
func (s *Stream) Items() int { return s.req.Items }

// ID is the request id the stream will have.
func (s *Stream) ID() string { return s.req.ID }

// Add validates one chunk and stages it. A *purge.InvalidError names its bad
// items; the stream stays usable (the caller decides whether to go on).
func (s *Stream) Add(ctx context.Context, pr PurgeRequest) error {
	pr.Soft = s.req.Soft
	chunk, err := s.c.Build(pr)
	if err != nil {
		return err
	}
	return s.AddBuilt(ctx, chunk)
}

// AddBuilt stages a chunk made by Client.Build (with the stream's soft
// flag), for a caller that looks at it first (the intake checks what its
// producer may purge).
func (s *Stream) AddBuilt(ctx context.Context, chunk *Request) error {
	chunk.ID, chunk.Soft = s.req.ID, s.req.Soft
	b, err := json.Marshal(chunk)
	if err != nil {
		return err
	}
	// Two plain commands, not MULTI/EXEC: the Redis client sends each
	// again when a reply is lost, and both are harmless twice (the chunk
	// is written by its index).
	key := s.req.StagingKey()
	err = s.rdb.HSet(ctx, key, strconv.Itoa(s.chunks), b).Err()
	if err == nil {
		err = s.rdb.Expire(ctx, key, stagingTTL).Err()
	}
	if err != nil {
		return fmt.Errorf("staging chunk %d: %w", s.chunks, err)
	}
	s.chunks++
	s.req.Items += chunk.Total()
	return nil
}

// Commit queues the staged chunks as one request.
func (s *Stream) Commit(ctx context.Context) (Receipt, error) {
	if s.chunks == 0 {
		return Receipt{}, errors.New("the request names nothing to purge")
	}
	s.req.Chunks = s.chunks
	s.req.EnqueuedAt = time.Now().UnixMilli()
	if s.delay > 0 {
		s.req.NotBefore = s.req.EnqueuedAt + s.delay.Milliseconds()
	}
	rc, err := s.c.EnqueueBuilt(ctx, &s.req)
	switch {
	case errors.Is(err, ErrUncertain):
		// perhaps queued: the chunks stay (their expiry clears them if not)
		return rc, err
	case (err != nil && !errors.Is(err, ErrNotReplicated)) || rc.Duplicate:
		s.Abort(ctx)
		return rc, err
	}
	// Queued: the chunks must wait for the worker however long that takes.
	// Should this fail, the request is queued all the same and its chunks
	// keep the TTL (a request whose chunks expire before admission is
	// marked failed, never finished silently).
	s.rdb.Persist(ctx, s.req.StagingKey())
	return rc, err
}

// Abort deletes what the stream staged.
func (s *Stream) Abort(ctx context.Context) {
	s.rdb.Del(ctx, s.req.StagingKey())
}
