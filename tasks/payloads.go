package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/hibiken/asynq"

	"github.com/purgeq/purgeq/internal/keyspace"
	"github.com/purgeq/purgeq/purge"
)

// Task types.
const (
	// TypeRequest carries one producer request into the outbox.
	TypeRequest = "purge:request"
	// TypeCall is one Cloudflare API call: a batch of one kind for one zone.
	TypeCall = "purge:call"
	// TypeDead mirrors a dead-letter entry as an archived task, so that the
	// asynq UI shows it; running it from the UI retries the entry.
	TypeDead = "purge:dead"
	// TypeCallback delivers a request's completion callback
	// (internal/callback).
	TypeCallback = "purge:callback"
)

// Queues. The worker serves both; calls weigh more so that a flood of new
// requests cannot starve the calls that drain them.
const (
	QueueRequests = "purge-requests"
	QueueCalls    = "purge-calls"
	QueueDead     = "purge-dead"
	// QueueCallbacks holds completion callbacks being delivered.
	QueueCallbacks = "purge-callbacks"
)

// CallMaxRetry is the asynq MaxRetry of purge:call tasks: never reached.
// asynq checks a task's retry count against it before its IsFailure, and
// its lease recoverer does too, so a call that must wait for the limits
// after its last allowed failure would be archived, outside the
// dead-letter queue. The call handler keeps the budget (PURGE_MAX_RETRY)
// itself and dead-letters the items when it is spent.
const CallMaxRetry = math.MaxInt32

// CallQueue hands calls to asynq as purge:call tasks whose task id is the
// call id.
type CallQueue struct {
	Client *asynq.Client
	// Timeout bounds one run of a call's task; Retention keeps a finished
	// one (and its id reserved, so that a late re-enqueue cannot send the
	// call twice).
	Timeout, Retention time.Duration
}

// Enqueue queues a call; an id queued before (a hand-off done twice) is
// no error.
func (q CallQueue) Enqueue(ctx context.Context, id string, payload []byte) error {
	_, err := q.Client.EnqueueContext(ctx, asynq.NewTask(TypeCall, payload), asynq.TaskID(id), asynq.Queue(QueueCalls),
		asynq.MaxRetry(CallMaxRetry), asynq.Retention(q.Retention), asynq.Timeout(q.Timeout))
	if errors.Is(err, asynq.ErrTaskIDConflict) {
		return nil
	}
	return err
}

// Request is the payload of a purge:request task: validated, normalised
// items grouped by zone id and kind.
type Request struct {
	ID string `json:"id"`
	// EnqueuedAt is the producer's clock, Unix milliseconds.
	EnqueuedAt int64 `json:"enqueued_at"`
	Soft       bool  `json:"soft,omitempty"`
	// Idempotent: the id comes from an idempotency key, so the processed
	// task is kept (and the key reserved) for the retention.
	Idempotent bool `json:"idempotent,omitempty"`
	// Nonce is unique to the invocation that queued the request: a client
	// that finds the id taken (its own write retried after a lost reply,
	// or an earlier run with the same idempotency key) tells the two
	// apart by it. A streamed request's chunks are staged under it too, so
	// that a re-run never touches the chunks of the run that was queued.
	Nonce string `json:"nonce,omitempty"`
	// Producer and Source say who queued the request and who or what
	// asked for it (PurgeRequest).
	Producer string `json:"producer,omitempty"`
	Source   string `json:"source,omitempty"`
	// Priority is high, bulk or empty (normal).
	Priority string `json:"priority,omitempty"`
	// Zones maps a zone id to its items by kind (Everything: ["*"]).
	Zones map[string]map[purge.Kind][]string `json:"zones"`
	// Chunks is set for a streamed request: its items wait in that many
	// staged chunks (StagingKey), each itself a Request; Items counts them.
	Chunks int `json:"chunks,omitempty"`
	Items  int `json:"items,omitempty"`
	// CallbackURL is PurgeRequest.CallbackURL.
	CallbackURL string `json:"callback_url,omitempty"`
	// NotBefore (Unix ms): the task is scheduled for then (PurgeRequest.Delay).
	NotBefore int64 `json:"not_before,omitempty"`
	// RepeatAfter (ms) is PurgeRequest.RepeatAfter; RepeatOf names the
	// request a repeat repeats.
	RepeatAfter int64  `json:"repeat_after,omitempty"`
	RepeatOf    string `json:"repeat_of,omitempty"`
}

// StagingKey is the Redis hash holding a streamed request's chunks by
// index (a hash, so that a client retrying a write cannot stage a chunk
// twice and shift the others), one per invocation.
func (r *Request) StagingKey() string { return keyspace.Staging(r.ID, r.Nonce) }

// Total is the number of items in the request.
func (r *Request) Total() int {
	if r.Chunks > 0 {
		return r.Items
	}
	n := 0
	for _, kinds := range r.Zones {
		for _, items := range kinds {
			n += len(items)
		}
	}
	return n
}

// Call is the payload of a purge:call task. The batching package's pop
// script writes it (in Lua, with cjson) when it takes a chunk from the
// outbox; this type is its Go side.
type Call struct {
	ID   string     `json:"id"`
	Zone string     `json:"zone"`
	Kind purge.Kind `json:"kind"`
	Soft bool       `json:"soft,omitempty"`
	// Items are canonical item keys; Sources[i] lists the request ids that
	// asked for Items[i] (space-separated).
	Items   []string `json:"items"`
	Sources []string `json:"sources"`
	// Oldest is when the oldest item was admitted (Unix ms, Redis clock).
	Oldest int64 `json:"oldest"`
	// Owner is the dispatcher whose window of outstanding calls this call
	// occupies until it is recorded.
	Owner string `json:"owner,omitempty"`
	// Priority is its lane's: high, bulk or empty (normal).
	Priority string `json:"priority,omitempty"`
}

// Batch is the call's API batch.
func (c *Call) Batch() purge.Batch {
	return purge.Batch{Kind: c.Kind, Items: c.Items, Soft: c.Soft}
}

// Suffixes of the calls that send part of a failed call again: the rest of
// a call after its named items were dead-lettered, and the halves of a call
// split to isolate an item Cloudflare did not name.
const (
	SubRest       = "r"
	SubFirstHalf  = "a"
	SubSecondHalf = "b"
)

// SubCallIDs lists the ids the calls sending parts of call id again have.
func SubCallIDs(id string) []string {
	return []string{id + SubRest, id + SubFirstHalf, id + SubSecondHalf}
}

// Sub is a call of the items at idx, with id c.ID+suffix: the part of a
// failed call that is sent again. Its id is deterministic so that a
// handler re-run after a crash enqueues it once.
func (c *Call) Sub(suffix string, idx []int) *Call {
	sub := &Call{ID: c.ID + suffix, Zone: c.Zone, Kind: c.Kind, Soft: c.Soft, Oldest: c.Oldest, Owner: c.Owner, Priority: c.Priority}
	for _, i := range idx {
		sub.Items = append(sub.Items, c.Items[i])
		sub.Sources = append(sub.Sources, c.Sources[i])
	}
	return sub
}

// DecodeCall reads a purge:call payload.
func DecodeCall(b []byte) (*Call, error) {
	var c Call
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("purge:call payload: %w", err)
	}
	if len(c.Items) == 0 || len(c.Sources) != len(c.Items) {
		return nil, fmt.Errorf("purge:call payload: %d items with %d sources", len(c.Items), len(c.Sources))
	}
	return &c, nil
}

// DecodeRequest reads a purge:request payload.
func DecodeRequest(b []byte) (*Request, error) {
	var r Request
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("purge:request payload: %w", err)
	}
	if r.ID == "" {
		return nil, fmt.Errorf("purge:request payload has no id")
	}
	return &r, nil
}
