package batching

import (
	"context"
	"sort"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/purgeq/purgeq/limits"
	"github.com/purgeq/purgeq/purge"
)

// Readiness answers whether the limits could carry a call now, taking
// nothing (limits.Limiter.Peek).
type Readiness interface {
	Peek(ctx context.Context, c limits.Need) (limits.Result, error)
}

// Route is what the dispatcher needs of a zone's Cloudflare account.
type Route struct {
	// Account names it; each account's scopes have windows of their own.
	Account string
	Limits  Readiness
	// Caps gives the most items per call of each kind.
	Caps func(purge.Kind) int
}

// Enqueuer hands a popped call to the queue as a purge:call task whose task
// id is id. Enqueueing an id that already exists must not fail.
type Enqueuer func(ctx context.Context, id string, payload []byte) error

// DispatcherConfig tunes the Dispatcher.
type DispatcherConfig struct {
	// Route finds a zone's account; false while no account holds the
	// zone (zones being listed): its lanes wait.
	Route func(zoneID string) (Route, bool)
	// BatchWait is the longest a partial chunk waits for more items when
	// the limits have room.
	BatchWait time.Duration
	// EagerFull sends a full chunk at once. Otherwise it too leaves only
	// once its oldest item has waited BatchWait, so that what a burst
	// requests again meanwhile goes out once.
	EagerFull bool
	// Window is the most outstanding calls per limit scope of this
	// dispatcher (each worker process runs one).
	Window int
	// Lease is how long an outstanding call holds its window slot if its
	// task never reports back (deleted from the UI, say).
	Lease time.Duration
	// Tick is how often lanes are looked at when nothing wakes the loop.
	Tick time.Duration
	// StrandedAfter is how old an unfinished hand-off must be before the
	// reaper re-enqueues it.
	StrandedAfter time.Duration
	// EverythingInterval is PURGE_EVERYTHING_MIN_INTERVAL (PopRequest).
	EverythingInterval time.Duration
}

// indexEvery is how often lanes missing from the ready index are added.
const indexEvery = 30 * time.Second

// Dispatcher turns waiting items into purge:call tasks.
type Dispatcher struct {
	ob      *Outbox
	enqueue Enqueuer
	cfg     DispatcherConfig
	log     zerolog.Logger
	wake    chan struct{}
	// id names this dispatcher's window of outstanding calls.
	id string

	// cursor rotates each class's lanes for fairness: the id of the lane
	// served last. Only Run touches it.
	cursor map[string]string
	// failing is set while passes fail, so that an outage is logged once.
	failing bool
	// homeless holds the zones whose lanes wait for an account (logged
	// once each).
	homeless map[string]bool
}

// NewDispatcher returns a Dispatcher; Run starts it.
func NewDispatcher(ob *Outbox, enq Enqueuer, cfg DispatcherConfig, log zerolog.Logger) *Dispatcher {
	return &Dispatcher{ob: ob, enqueue: enq, cfg: cfg, log: log, id: randomHex(8),
		wake: make(chan struct{}, 1), cursor: map[string]string{}, homeless: map[string]bool{}}
}

// Wake asks for a pass soon: items arrived or a call finished.
func (d *Dispatcher) Wake() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// Run dispatches until ctx ends. Redis errors are logged and retried on the
// next tick: a dispatcher never gives up while the worker runs.
func (d *Dispatcher) Run(ctx context.Context) {
	tick := time.NewTicker(d.cfg.Tick)
	defer tick.Stop()
	reap := time.NewTicker(d.cfg.StrandedAfter / 2)
	defer reap.Stop()
	index := time.NewTicker(indexEvery)
	defer index.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-reap.C:
			d.reap(ctx)
			continue
		case <-index.C:
			// lanes an older version admitted (a rolling upgrade)
			if err := d.ob.IndexLanes(ctx, false); err != nil && ctx.Err() == nil {
				d.log.Warn().Err(err).Msg("indexing waiting lanes failed")
			}
			continue
		case <-tick.C:
		case <-d.wake:
		}
		err := d.pass(ctx)
		switch {
		case err != nil && ctx.Err() == nil && !d.failing:
			d.failing = true
			d.log.Warn().Err(err).Msg("dispatching failed; retrying until Redis answers")
		case err == nil && d.failing:
			d.failing = false
			d.log.Info().Msg("dispatching again")
		}
	}
}

// pass serves every scope until its window is full or nothing is ready.
// It reads only the lanes the ready index says may send now, so its cost
// follows the lanes with work that can leave, not every lane or zone.
func (d *Dispatcher) pass(ctx context.Context) error {
	lanes, err := d.ob.Ready(ctx)
	if err != nil {
		return err
	}
	type class struct {
		account  string
		scope    purge.Scope
		priority string
	}
	byClass := map[class][]Lane{}
	routes := map[string]Route{}
	for _, l := range lanes {
		r, ok := d.cfg.Route(l.Zone)
		if !ok {
			if !d.homeless[l.Zone] {
				d.homeless[l.Zone] = true
				d.log.Warn().Str("zone", l.Zone).Msg("items wait for a zone no account holds (yet): they leave once the zone is configured or listed")
			}
			continue
		}
		routes[r.Account] = r
		c := class{r.Account, l.Scope(), l.Priority}
		byClass[c] = append(byClass[c], l)
	}
	accounts := make([]string, 0, len(routes))
	for a := range routes {
		accounts = append(accounts, a)
	}
	sort.Strings(accounts)
	// Within an account's scope, high lanes first, bulk last: bulk pops
	// only what the window has left once the others were served.
	for _, account := range accounts {
		for _, scope := range []purge.Scope{purge.ScopeFlex, purge.ScopeURL} {
			for _, priority := range []string{"high", "", "bulk"} {
				ls := byClass[class{account, scope, priority}]
				if len(ls) == 0 {
					continue
				}
				sort.Slice(ls, func(i, j int) bool { return ls[i].id() < ls[j].id() })
				if err := d.serveScope(ctx, routes[account], account+":"+string(scope)+":"+priority, ls); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// serveScope gives each lane of one scope and priority (the class, which
// also keys its round-robin cursor) at most one chunk per round, starting
// after the lane served last, until the window is full or a round pops
// nothing. lanes are sorted by id.
func (d *Dispatcher) serveScope(ctx context.Context, r Route, class string, lanes []Lane) error {
	for {
		popped := false
		start := sort.Search(len(lanes), func(i int) bool { return lanes[i].id() > d.cursor[class] })
		for i := range lanes {
			lane := lanes[(start+i)%len(lanes)]
			status, err := d.tryLane(ctx, r, lane)
			if err != nil {
				return err
			}
			switch status {
			case WindowFull:
				return nil
			case Popped:
				popped = true
				d.cursor[class] = lane.id()
			}
		}
		if !popped {
			return nil
		}
	}
}

// tryLane pops the lane's next chunk if it is full, or partial and ready
// and the limits could carry it now.
func (d *Dispatcher) tryLane(ctx context.Context, r Route, lane Lane) (PopStatus, error) {
	owner := d.id // the window: per scope of this dispatcher, and per account
	if r.Account != "" {
		owner += "@" + r.Account
	}
	req := PopRequest{Lane: lane, Cap: r.Caps(lane.Kind), Wait: d.cfg.BatchWait, Eager: d.cfg.EagerFull, Window: d.cfg.Window, Lease: d.cfg.Lease, Owner: owner,
		EverythingInterval: d.cfg.EverythingInterval}
	switch lane.Priority {
	case "high":
		// at once, whatever its size, ahead of the window: its call then
		// claims the scope's next token (limits.Need.High)
		req.Wait, req.AllowPartial, req.Window = 0, true, d.cfg.Window+1
	case "bulk":
		// only when nothing else of the scope is outstanding
		req.Window = 1
	}
	res, err := d.ob.Pop(ctx, req)
	if err != nil {
		return 0, err
	}
	if res.Status == PartialReady {
		peek, err := r.Limits.Peek(ctx, limits.Need{Kind: lane.Kind, Items: res.Size, Lane: lane.Zone})
		if err != nil {
			return 0, err
		}
		// A lane the limits have not served for a batch wait leaves anyway,
		// one call beyond the window: its call then waits in line for the
		// next capacity ahead of the busier lanes (limits.Need.Lane).
		starved := !peek.OK && !strings.HasPrefix(peek.Blocker, "cooldown:") && peek.At.Sub(peek.LastServed) >= d.cfg.BatchWait
		if starved {
			req.Window = d.cfg.Window + 1
		}
		if !peek.OK && !starved {
			// Hold partial chunks while the limits are busy: the items
			// keep coalescing, and the call that leaves later is fuller.
			return NotReady, d.ob.Hold(ctx, lane, min(peek.Wait, d.cfg.BatchWait))
		}
		req.AllowPartial = true
		if res, err = d.ob.Pop(ctx, req); err != nil {
			return 0, err
		}
	}
	if res.Status == Popped {
		d.handoff(ctx, res.CallID, res.Call)
	}
	return res.Status, nil
}

// handoff enqueues a popped call and clears its in-flight record. On
// failure the record stays and the reaper retries it.
func (d *Dispatcher) handoff(ctx context.Context, id string, payload []byte) {
	if err := d.enqueue(ctx, id, payload); err != nil {
		d.log.Warn().Err(err).Str("call", id).Msg("enqueueing call failed; the reaper will retry it")
		return
	}
	if err := d.ob.Handoff(ctx, id); err != nil {
		d.log.Warn().Err(err).Str("call", id).Msg("clearing in-flight record failed; the reaper will clear it")
	}
}

// reap re-enqueues calls whose hand-off did not finish.
func (d *Dispatcher) reap(ctx context.Context) {
	stranded, err := d.ob.Stranded(ctx, d.cfg.StrandedAfter)
	if err != nil {
		d.log.Warn().Err(err).Msg("listing stranded calls failed")
		return
	}
	for id, payload := range stranded {
		d.log.Warn().Str("call", id).Msg("recovering a call whose hand-off did not finish")
		d.handoff(ctx, id, payload)
	}
}
