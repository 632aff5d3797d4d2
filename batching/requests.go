package batching

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
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
	// NotBefore: a delayed request's items are not sent before then.
	NotBefore *time.Time `json:"not_before,omitempty"`
	// RepeatAfter: the items are purged again this long after the request
	// is done; Repeat names that repeat once it is scheduled, and RepeatOf
	// the request a repeat repeats.
	RepeatAfter string  `json:"repeat_after,omitempty"`
	Repeat      *Repeat `json:"repeat,omitempty"`
	RepeatOf    string  `json:"repeat_of,omitempty"`
}

// Repeat is a request's scheduled repeat: its id, and when it is due.
type Repeat struct {
	ID string    `json:"id"`
	At time.Time `json:"at"`
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
	st = Status{ID: id, State: Queued, Total: req.Total(), Producer: req.Producer, Source: req.Source, RepeatOf: req.RepeatOf}
	st.follow(map[string]string{"not_before": strconv.FormatInt(req.NotBefore, 10), "repeat_after": strconv.FormatInt(req.RepeatAfter, 10)})
	return st, nil
}

// follow fills the status's timing from a request's meta hash
// (keyspace.RequestMeta) or payload.
func (s *Status) follow(m map[string]string) {
	ms := func(k string) int64 { n, _ := strconv.ParseInt(m[k], 10, 64); return n }
	if t := ms("not_before"); t > 0 {
		at := time.UnixMilli(t).UTC()
		s.NotBefore = &at
	}
	if m["repeat_id"] != "" {
		s.Repeat = &Repeat{ID: m["repeat_id"], At: time.UnixMilli(ms("repeat_at")).UTC()}
	} else if d := ms("repeat_after"); d > 0 {
		s.RepeatAfter = (time.Duration(d) * time.Millisecond).String()
	}
	if m["repeat_of"] != "" {
		s.RepeatOf = m["repeat_of"]
	}
}

// Admitted reads the status of a request the outbox admitted (ErrUnknownRequest
// for one still in the queue, or whose status expired).
func (o *Requests) Admitted(ctx context.Context, id string) (Status, error) {
	var req, meta *redis.MapStringStringCmd
	_, err := o.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		req, meta = p.HGetAll(ctx, keyspace.Request(id)), p.HGetAll(ctx, keyspace.RequestMeta(id))
		return nil
	})
	if err != nil {
		return Status{}, err
	}
	v := req.Val()
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
	s.follow(meta.Val())
	return s, nil
}

// Fail marks a request failed as a whole, with the reason: what it asked
// for cannot be purged or dead-lettered item by item (its staged items
// expired or vanished before admission). Items of it already admitted
// still go out.
func (o *Requests) Fail(ctx context.Context, id, reason string) error {
	return finishedCmd.Run(ctx, o.rdb, []string{keyspace.Request(id)}, prefix, o.retention.Milliseconds(), id, reason).Err()
}

// Follow records what a request asks for beyond its items (its callback,
// timing and repeat, in its meta hash), before its admission begins, so
// that the scripts that end it note the end (credit.lua). A request to be
// repeated keeps its repeat's payload until the repeat is scheduled.
// Recording again (a retried task) changes nothing.
func (o *Requests) Follow(ctx context.Context, r *tasks.Request) error {
	var fields []any
	for _, f := range []struct {
		name string
		v    any
		set  bool
	}{{"callback", r.CallbackURL, r.CallbackURL != ""}, {"not_before", r.NotBefore, r.NotBefore > 0},
		{"repeat_after", r.RepeatAfter, r.RepeatAfter > 0}, {"repeat_of", r.RepeatOf, r.RepeatOf != ""}} {
		if f.set {
			fields = append(fields, f.name, f.v)
		}
	}
	if len(fields) == 0 {
		return nil
	}
	_, err := o.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, keyspace.RequestMeta(r.ID), fields...)
		p.PExpire(ctx, keyspace.RequestMeta(r.ID), requestIdle)
		if r.RepeatAfter > 0 {
			b, err := json.Marshal(r.Repeat())
			if err != nil {
				return err
			}
			p.Set(ctx, keyspace.RepeatOf(r.ID), b, requestIdle)
		}
		return nil
	})
	return err
}

// requestIdle is requestIdleMs as a duration.
var requestIdle = func() time.Duration {
	ms, _ := strconv.Atoi(requestIdleMs)
	return time.Duration(ms) * time.Millisecond
}()

// Ending is one end of a request with follow-ups, noted by the script that
// ended it (keyspace.Ended).
type Ending struct {
	Entry string // as listed: "id state"
	ID    string
	State State
}

// Endings lists up to n ends not yet followed up, oldest first.
func (o *Requests) Endings(ctx context.Context, n int) ([]Ending, error) {
	entries, err := o.rdb.LRange(ctx, keyspace.Ended, 0, int64(n)-1).Result()
	out := make([]Ending, 0, len(entries))
	for _, e := range entries {
		id, state, _ := strings.Cut(e, " ")
		out = append(out, Ending{Entry: e, ID: id, State: State(state)})
	}
	return out, err
}

// Followed removes an end whose follow-ups are queued.
func (o *Requests) Followed(ctx context.Context, e Ending) error {
	return o.rdb.LRem(ctx, keyspace.Ended, 1, e.Entry).Err()
}

// Followups is what a request asks for once it ends.
type Followups struct {
	CallbackURL string
	// RepeatAfter is the wait before the repeat; Repeated is set once the
	// repeat is scheduled.
	RepeatAfter time.Duration
	Repeated    bool
	// Finished is when the request ended (Redis clock).
	Finished time.Time
}

// Followups reads a request's follow-ups (ErrUnknownRequest once its
// status expired).
func (o *Requests) Followups(ctx context.Context, id string) (Followups, error) {
	var meta *redis.MapStringStringCmd
	var finished *redis.StringCmd
	_, err := o.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		meta, finished = p.HGetAll(ctx, keyspace.RequestMeta(id)), p.HGet(ctx, keyspace.Request(id), "finished")
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return Followups{}, err
	}
	m := meta.Val()
	if len(m) == 0 {
		return Followups{}, ErrUnknownRequest
	}
	after, _ := strconv.ParseInt(m["repeat_after"], 10, 64)
	ms, _ := finished.Int64()
	return Followups{CallbackURL: m["callback"], RepeatAfter: time.Duration(after) * time.Millisecond,
		Repeated: m["repeat_id"] != "", Finished: time.UnixMilli(ms)}, nil
}

// RepeatPayload is the request that will repeat request id (Follow kept it).
func (o *Requests) RepeatPayload(ctx context.Context, id string) (*tasks.Request, error) {
	b, err := o.rdb.Get(ctx, keyspace.RepeatOf(id)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("%w: the payload of request %s's repeat expired", ErrUnknownRequest, id)
	}
	if err != nil {
		return nil, err
	}
	return tasks.DecodeRequest(b)
}

// Repeated records that request id's repeat is scheduled, for its status,
// and drops the payload kept for it.
func (o *Requests) Repeated(ctx context.Context, id, repeatID string, at time.Time) error {
	_, err := o.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, keyspace.RequestMeta(id), "repeat_id", repeatID, "repeat_at", at.UnixMilli())
		p.Del(ctx, keyspace.RepeatOf(id))
		return nil
	})
	return err
}
