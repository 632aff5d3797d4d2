package batching

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/purgeq/purgeq/internal/keyspace"
	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/tasks"
)

// prefix is passed to the scripts, which build per-lane and per-request
// keys from it (internal/keyspace documents them).
const prefix = keyspace.Prefix

// requestIdleMs (7 days) is how long a request's status outlives its last
// progress when it never finishes (a request whose items were dropped from
// the dead-letter queue, say).
const requestIdleMs = "604800000"

// admitSlice is the most items one admission script takes: a request of
// 200,000 tags is admitted in 200 short scripts, so that Redis keeps
// answering everyone else meanwhile.
const admitSlice = 1000

// Lane is one zone, kind and soft/hard combination: the unit of coalescing.
type Lane struct {
	Zone string
	Kind purge.Kind
	Soft bool
	// Priority is high, bulk or empty (normal): high lanes are served
	// first, bulk ones with what the others leave.
	Priority string
}

func (l Lane) id() string {
	soft := "0"
	if l.Soft {
		soft = "1"
	}
	id := l.Zone + "|" + string(l.Kind) + "|" + soft
	if l.Priority != "" {
		id += "|" + l.Priority
	}
	return id
}

func parseLane(s string) (Lane, bool) {
	parts := strings.Split(s, "|")
	if len(parts) != 3 && len(parts) != 4 {
		return Lane{}, false
	}
	l := Lane{Zone: parts[0], Kind: purge.Kind(parts[1]), Soft: parts[2] == "1"}
	if len(parts) == 4 {
		l.Priority = parts[3]
	}
	return l, true
}

// Scope is the purge bucket the lane's calls draw on.
func (l Lane) Scope() purge.Scope { return purge.BucketScope(l.Kind) }

// Outbox owns the items on their way to Cloudflare: it admits requests'
// items into lanes, pops chunks as calls, hands them to asynq and keeps
// them in flight until then, and records each call's outcome (record.go).
// Request status is Requests', the dead-letter queue DeadLetters'.
type Outbox struct {
	rdb redis.UniversalClient
	// retention keeps a finished request's status this long.
	retention time.Duration
}

// NewOutbox returns an Outbox on rdb.
func NewOutbox(rdb redis.UniversalClient, retention time.Duration) *Outbox {
	return &Outbox{rdb: rdb, retention: retention}
}

// Admit puts chunk i of n of a request into the outbox (0 of 1 for a
// request that was not streamed), in slices of at most admitSlice items.
// Admitting a chunk twice (a retried task) changes nothing the second
// time; a task that stopped half-way goes on with the next slice.
func (o *Outbox) Admit(ctx context.Context, r *tasks.Request, chunk, chunks int) error {
	soft := "0"
	if r.Soft {
		soft = "1"
	}
	// groups in order: a zone's purge-everything first, so that the zone's
	// other items see it.
	type group struct {
		zone  string
		kind  purge.Kind
		items []string
	}
	var groups []group
	// zones in a fixed order: a retried task cuts the same slices
	for _, zone := range slices.Sorted(maps.Keys(r.Zones)) {
		kinds := r.Zones[zone]
		for _, k := range append([]purge.Kind{purge.Everything}, purge.Kinds[:4]...) {
			if len(kinds[k]) > 0 {
				groups = append(groups, group{zone, k, kinds[k]})
			}
		}
	}
	slice, n := 0, 0
	args := []any{}
	flush := func(last bool) error {
		head := []any{prefix, o.retention.Milliseconds(), r.ID, r.EnqueuedAt, soft, n, chunk, chunks, slice, flag(last), r.Producer, r.Source, r.Priority}
		if err := admitCmd.Run(ctx, o.rdb, []string{keyspace.Lanes}, append(head, args...)...).Err(); err != nil {
			return fmt.Errorf("admitting request %s: %w", r.ID, err)
		}
		slice, n, args = slice+1, 0, args[:0]
		return nil
	}
	for _, g := range groups {
		for start := 0; start < len(g.items); {
			if n == admitSlice {
				if err := flush(false); err != nil {
					return err
				}
			}
			end := min(len(g.items), start+admitSlice-n)
			args = append(args, g.zone, string(g.kind), end-start)
			for _, it := range g.items[start:end] {
				args = append(args, it)
			}
			n += end - start
			start = end
		}
	}
	return flush(true)
}

// PopStatus says what a pop attempt found.
type PopStatus int

// Outcomes of Pop.
const (
	Popped PopStatus = iota + 1
	WindowFull
	LaneEmpty
	NotReady     // a chunk whose oldest item has not waited long enough
	PartialReady // a partial chunk that may go if the limits allow it
)

// PopRequest is one pop attempt.
type PopRequest struct {
	Lane         Lane
	Cap          int
	Wait         time.Duration
	AllowPartial bool
	// Eager pops a full chunk at once; otherwise a full chunk too waits
	// until its oldest item has waited Wait, so that items requested
	// again meanwhile go out once.
	Eager  bool
	Window int
	Lease  time.Duration
	// Owner identifies the dispatcher whose window the call counts in.
	Owner string
	// EverythingInterval: a purge-everything popped takes the later ones
	// of its zone into it for this long (PURGE_EVERYTHING_MIN_INTERVAL).
	EverythingInterval time.Duration
}

// PopResult is the outcome of Pop.
type PopResult struct {
	Status PopStatus
	// Call is the popped chunk's payload (Popped).
	Call []byte
	// CallID is the popped call's id, which is also its asynq task id.
	CallID string
	// ReadyIn is how long until a NotReady chunk is ready.
	ReadyIn time.Duration
	// Size is the number of items of a PartialReady chunk.
	Size int
}

// Pop takes the lane's next chunk if the window and the batch rules allow.
// A popped chunk is recorded as in flight until Handoff.
func (o *Outbox) Pop(ctx context.Context, p PopRequest) (PopResult, error) {
	return o.pop(ctx, p, "c"+randomHex(12))
}

// pop is Pop with the call id given: running it again with the same id
// (what the Redis client does when a connection drops before the reply)
// returns the same chunk.
func (o *Outbox) pop(ctx context.Context, p PopRequest, id string) (PopResult, error) {
	soft := "0"
	if p.Lane.Soft {
		soft = "1"
	}
	res, err := popCmd.Run(ctx, o.rdb,
		[]string{keyspace.Lanes, keyspace.Inflight, keyspace.InflightAt, keyspace.Outstanding(string(p.Lane.Scope()), p.Owner)},
		prefix, p.Lane.id(), p.Cap, p.Wait.Milliseconds(), flag(p.AllowPartial), p.Window, p.Lease.Milliseconds(),
		id, p.Lane.Zone, string(p.Lane.Kind), soft, p.Owner, flag(p.Eager), p.EverythingInterval.Milliseconds(), p.Lane.Priority).Slice()
	if err != nil {
		return PopResult{}, fmt.Errorf("popping %s: %w", p.Lane.id(), err)
	}
	status, _ := res[0].(int64)
	value, _ := res[1].(string)
	now, _ := res[2].(int64)
	switch status {
	case 1:
		return PopResult{Status: Popped, Call: []byte(value), CallID: id}, nil
	case 0:
		return PopResult{Status: WindowFull}, nil
	case -1:
		return PopResult{Status: LaneEmpty}, nil
	case -2:
		at, _ := strconv.ParseInt(value, 10, 64)
		return PopResult{Status: NotReady, ReadyIn: time.Duration(at-now) * time.Millisecond}, nil
	case -3:
		n, _ := strconv.Atoi(value)
		return PopResult{Status: PartialReady, Size: n}, nil
	}
	return PopResult{}, fmt.Errorf("popping %s: unexpected status %d", p.Lane.id(), status)
}

// Handoff clears a call's in-flight record once its task is in asynq.
// Two plain commands, not MULTI/EXEC, so that the Redis client sends each
// again when its reply is lost (both are harmless twice; the reaper skips
// a time without a record).
func (o *Outbox) Handoff(ctx context.Context, callID string) error {
	if err := o.rdb.HDel(ctx, keyspace.Inflight, callID).Err(); err != nil {
		return err
	}
	return o.rdb.ZRem(ctx, keyspace.InflightAt, callID).Err()
}

// InFlight returns the in-flight records among ids (calls popped or
// recorded but not yet handed to asynq).
func (o *Outbox) InFlight(ctx context.Context, ids ...string) (map[string][]byte, error) {
	vals, err := o.rdb.HMGet(ctx, keyspace.Inflight, ids...).Result()
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	for i, v := range vals {
		if s, ok := v.(string); ok {
			out[ids[i]] = []byte(s)
		}
	}
	return out, nil
}

// Stranded returns in-flight records older than age: chunks whose hand-off
// to asynq did not finish (the process died, or Redis failed the enqueue).
func (o *Outbox) Stranded(ctx context.Context, age time.Duration) (map[string][]byte, error) {
	res, err := strandedCmd.Run(ctx, o.rdb, []string{keyspace.Inflight, keyspace.InflightAt}, age.Milliseconds()).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("listing stranded calls: %w", err)
	}
	out := make(map[string][]byte, len(res)/2)
	for i := 0; i+1 < len(res); i += 2 {
		out[res[i]] = []byte(res[i+1])
	}
	return out, nil
}

// readyBatch bounds the lanes one dispatcher pass looks at.
const readyBatch = 10000

// Ready lists the lanes the dispatcher should look at now (the ready
// index: lanes that got items, whose chunk's batch wait is over, or whose
// hold ended), the longest-ready first.
func (o *Outbox) Ready(ctx context.Context) ([]Lane, error) {
	ids, err := readyCmd.Run(ctx, o.rdb, []string{keyspace.Ready}, readyBatch).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("reading the ready index: %w", err)
	}
	lanes := make([]Lane, 0, len(ids))
	for _, id := range ids {
		if l, ok := parseLane(id); ok {
			lanes = append(lanes, l)
		}
	}
	return lanes, nil
}

// Hold keeps the dispatcher from looking at lane for d, unless items
// arrive: its partial chunk waits while the limits are busy.
func (o *Outbox) Hold(ctx context.Context, lane Lane, d time.Duration) error {
	return holdCmd.Run(ctx, o.rdb, []string{keyspace.Ready}, lane.id(), max(1, d.Milliseconds())).Err()
}

// IndexLanes puts the lanes with items into the ready index, due now.
// With every set (at start-up) it makes them all due: lanes pushed back
// under another PURGE_BATCH_WAIT than this worker's are looked at once.
// Without, it adds only the lanes missing from the index: those an older
// version admitted during a rolling upgrade. A lane that empties meanwhile
// leaves the index at its next look.
func (o *Outbox) IndexLanes(ctx context.Context, every bool) error {
	ids, err := o.rdb.SMembers(ctx, keyspace.Lanes).Result()
	if err != nil {
		return err
	}
	for chunk := range slices.Chunk(ids, 1000) {
		zs := make([]redis.Z, len(chunk))
		for i, id := range chunk {
			zs[i] = redis.Z{Member: id}
		}
		add := o.rdb.ZAddNX
		if every {
			add = o.rdb.ZAdd
		}
		if err := add(ctx, keyspace.Ready, zs...).Err(); err != nil {
			return err
		}
	}
	return nil
}

// Lanes lists the lanes that have items waiting.
func (o *Outbox) Lanes(ctx context.Context) ([]Lane, error) {
	ids, err := o.rdb.SMembers(ctx, keyspace.Lanes).Result()
	if err != nil {
		return nil, err
	}
	lanes := make([]Lane, 0, len(ids))
	for _, id := range ids {
		if l, ok := parseLane(id); ok {
			lanes = append(lanes, l)
		}
	}
	return lanes, nil
}

func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// LaneStat is one lane's backlog, for metrics.
type LaneStat struct {
	Lane  Lane
	Depth int64
	// Oldest is when the oldest waiting item was admitted.
	Oldest time.Time
}

// LaneStats reports every lane's depth and oldest item.
func (o *Outbox) LaneStats(ctx context.Context) ([]LaneStat, error) {
	lanes, err := o.Lanes(ctx)
	if err != nil || len(lanes) == 0 {
		return nil, err
	}
	out := make([]LaneStat, 0, len(lanes))
	for chunk := range slices.Chunk(lanes, laneStatsChunk) {
		args := []any{prefix}
		for _, l := range chunk {
			args = append(args, l.id())
		}
		res, err := laneStatsCmd.Run(ctx, o.rdb, []string{keyspace.Lanes}, args...).Int64Slice()
		if err != nil {
			return nil, fmt.Errorf("reading lane stats: %w", err)
		}
		for i, l := range chunk {
			st := LaneStat{Lane: l, Depth: res[2*i]}
			if ms := res[2*i+1]; ms > 0 {
				st.Oldest = time.UnixMilli(ms)
			}
			out = append(out, st)
		}
	}
	return out, nil
}

// laneStatsChunk bounds the lanes one lane_stats script reads, so that
// reading thousands of lanes never blocks Redis for long (10,000 lanes in
// one script took 93 ms).
const laneStatsChunk = 500
