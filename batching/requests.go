package batching

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/purgeq/purgeq/internal/keyspace"
	"github.com/purgeq/purgeq/tasks"
)

// State is where a request stands.
type State string

// States of a request.
const (
	Queued     State = "queued"      // nothing accounted for yet
	InProgress State = "in_progress" // some items purged, superseded or dead
	Done       State = "done"        // every item accepted by Cloudflare
	Failed     State = "failed"      // every item accounted for, some dead (or the request failed as a whole)
)

// Finished reports whether the request has ended (done or failed).
func (s State) Finished() bool { return s == Done || s == Failed }

// Status is a request's progress.
type Status struct {
	ID         string `json:"id"`
	State      State  `json:"state"`
	Total      int    `json:"total"`
	Purged     int    `json:"purged"`
	Dead       int    `json:"dead"`
	Superseded int    `json:"superseded"`
	// Producer and Source say who queued the request and who or what asked.
	Producer string `json:"producer,omitempty"`
	Source   string `json:"source,omitempty"`
	// Error says why a request failed as a whole (its staged items were
	// lost before admission), when it did.
	Error string `json:"error,omitempty"`
}

// ErrUnknownRequest: no admitted request has the id (it may still wait in
// the queue, or its status expired).
var ErrUnknownRequest = errors.New("unknown request")

// Requests owns the status of requests: the counters the outbox's scripts
// credit as items are purged, superseded or dead-lettered, and a request's
// failure as a whole.
type Requests struct {
	rdb       redis.UniversalClient
	retention time.Duration
}

// NewRequests returns Requests on rdb; a failed request's status is kept
// for retention.
func NewRequests(rdb redis.UniversalClient, retention time.Duration) *Requests {
	return &Requests{rdb: rdb, retention: retention}
}

// Status reads a request's progress. A request still waiting for admission
// in asynq's queue reads queued, with its total.
func (o *Requests) Status(ctx context.Context, id string) (Status, error) {
	st, err := o.Admitted(ctx, id)
	if !errors.Is(err, ErrUnknownRequest) {
		return st, err
	}
	info, terr := asynq.NewInspectorFromRedisClient(o.rdb).GetTaskInfo(tasks.QueueRequests, id)
	if terr != nil {
		if errors.Is(terr, asynq.ErrTaskNotFound) || errors.Is(terr, asynq.ErrQueueNotFound) {
			return st, err
		}
		return st, terr
	}
	req, derr := tasks.DecodeRequest(info.Payload)
	if derr != nil {
		return st, derr
	}
	return Status{ID: id, State: Queued, Total: req.Total(), Producer: req.Producer, Source: req.Source}, nil
}

// Admitted reads the status of a request the outbox admitted (ErrUnknownRequest
// for one still in the queue, or whose status expired).
func (o *Requests) Admitted(ctx context.Context, id string) (Status, error) {
	v, err := o.rdb.HGetAll(ctx, keyspace.Request(id)).Result()
	if err != nil {
		return Status{}, err
	}
	if len(v) == 0 {
		return Status{}, ErrUnknownRequest
	}
	atoi := func(k string) int { n, _ := strconv.Atoi(v[k]); return n }
	s := Status{ID: id, Total: atoi("total"), Purged: atoi("purged"), Dead: atoi("dead"), Superseded: atoi("superseded")}
	s.Error, s.Producer, s.Source = v["error"], v["producer"], v["source"]
	admitted := atoi("pending") == 0
	switch done := s.Purged + s.Dead + s.Superseded; {
	case s.Error != "":
		s.State = Failed
	case admitted && done >= s.Total && s.Dead > 0:
		s.State = Failed
	case admitted && done >= s.Total:
		s.State = Done
	case done > 0:
		s.State = InProgress
	default:
		s.State = Queued
	}
	return s, nil
}

// Fail marks a request failed as a whole, with the reason: what it asked
// for cannot be purged or dead-lettered item by item (its staged items
// expired or vanished before admission). Items of it already admitted
// still go out.
func (o *Requests) Fail(ctx context.Context, id, reason string) error {
	if err := o.rdb.HSet(ctx, keyspace.Request(id), "error", reason, "finished", time.Now().UnixMilli()).Err(); err != nil {
		return err
	}
	return o.rdb.PExpire(ctx, keyspace.Request(id), o.retention).Err()
}
