package worker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/purgeq/purgeq/batching"
	"github.com/purgeq/purgeq/internal/config"
	"github.com/purgeq/purgeq/internal/metrics"
	"github.com/purgeq/purgeq/internal/pipeline"
	"github.com/purgeq/purgeq/limits"
	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/tasks"
)

// account is one Cloudflare account at run time.
type account struct {
	cfg     config.Account
	limiter *limits.Limiter
	api     *purge.Client
	call    pipeline.Account
	route   batching.Route
}

// accounts routes each zone to its account. Configured zones are fixed;
// an account without zones lists its own through the API (discover).
// zoneOf is a zone's account and name.
type zoneOf struct {
	a    *account
	name string
}

type accounts struct {
	list []*account
	rdb  redis.Cmdable
	log  zerolog.Logger

	mu     sync.RWMutex
	byZone map[string]zoneOf // zone id → its account and name
	zones  map[*account]tasks.Zones
	// relist asks runDiscovery for a listing soon (a call met a zone
	// another worker listed first).
	relist chan struct{}
	// soonest is the shortest time between two listings asked for.
	soonest time.Duration
}

// newAccounts builds every account's limiter and API client.
func newAccounts(cfg *config.Config, rdb redis.Cmdable, log zerolog.Logger) (*accounts, error) {
	as := &accounts{rdb: rdb, log: log, byZone: map[string]zoneOf{}, zones: map[*account]tasks.Zones{},
		relist: make(chan struct{}, 1), soonest: min(time.Minute, cfg.ZonesRefresh/10)}
	for _, c := range cfg.Accounts {
		lim, err := limits.New(rdb, cfg.AccountLimits(c))
		if err != nil {
			return nil, fmt.Errorf("account %s: %w", c.Name, err)
		}
		api, err := purge.NewClient(purge.ClientConfig{BaseURL: cfg.APIURL, Token: c.Token, Timeout: cfg.APITimeout, UserAgent: "purgeq-worker"})
		if err != nil {
			return nil, fmt.Errorf("account %s: %w", c.Name, err)
		}
		a := &account{cfg: c, limiter: lim, api: api,
			call:  pipeline.Account{Name: c.Name, Limiter: lim, API: api, Cooldown: c.Cooldown},
			route: batching.Route{Account: cfg.AccountLimits(c).Account, Limits: lim, Caps: c.Plan.Cap}}
		as.list = append(as.list, a)
		as.set(a, c.Zones)
	}
	return as, nil
}

// set makes zones the account's. A zone another account holds stays its
// (configured zones win over listed ones; a token of several accounts
// lists them all).
func (as *accounts) set(a *account, zones tasks.Zones) {
	as.mu.Lock()
	defer as.mu.Unlock()
	for _, z := range as.zones[a] {
		if as.byZone[z.ID].a == a {
			delete(as.byZone, z.ID)
		}
	}
	kept := make(tasks.Zones, 0, len(zones))
	for _, z := range zones {
		if other, ok := as.byZone[z.ID]; ok && other.a != a {
			continue
		}
		as.byZone[z.ID] = zoneOf{a, z.Name}
		kept = append(kept, z)
	}
	as.zones[a] = kept
}

func (as *accounts) of(zoneID string) (*account, bool) {
	as.mu.RLock()
	defer as.mu.RUnlock()
	z, ok := as.byZone[zoneID]
	return z.a, ok
}

// Call is pipeline.CallHandler's Route.
func (as *accounts) Call(zoneID string) (*pipeline.Account, bool) {
	a, ok := as.of(zoneID)
	if !ok {
		return nil, false
	}
	return &a.call, true
}

// Unlisted is pipeline.CallHandler's Unlisted: with accounts that list
// their zones, a zone this worker does not know may have been listed by
// another: ask for a listing and wait for it.
func (as *accounts) Unlisted(string) time.Duration {
	if !slices.ContainsFunc(as.list, func(a *account) bool { return a.cfg.Discovers() }) {
		return 0
	}
	select {
	case as.relist <- struct{}{}:
	default:
	}
	return as.soonest + time.Second
}

// Dispatch is batching.DispatcherConfig's Route.
func (as *accounts) Dispatch(zoneID string) (batching.Route, bool) {
	a, ok := as.of(zoneID)
	if !ok {
		return batching.Route{}, false
	}
	return a.route, true
}

// Metrics lists the accounts for metrics.State.
func (as *accounts) Metrics() []metrics.Account {
	out := make([]metrics.Account, len(as.list))
	for i, a := range as.list {
		out[i] = metrics.Account{Name: a.cfg.Name, Limits: a.limiter}
	}
	return out
}

// ZoneName names a zone id and its account (unknown: the id, and the
// default account).
func (as *accounts) ZoneName(zoneID string) (name, account string) {
	as.mu.RLock()
	defer as.mu.RUnlock()
	z, ok := as.byZone[zoneID]
	if !ok {
		return zoneID, config.DefaultAccount
	}
	return z.name, z.a.cfg.Name
}

// Zones lists every zone, configured or listed, in a stable order.
func (as *accounts) Zones() tasks.Zones {
	as.mu.RLock()
	defer as.mu.RUnlock()
	var out tasks.Zones
	for _, a := range as.list {
		out = append(out, as.zones[a]...)
	}
	slices.SortFunc(out, func(x, y tasks.Zone) int { return cmpString(x.Name, y.Name) })
	return out
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// publish records every zone for producers.
func (as *accounts) publish(ctx context.Context) error {
	return tasks.PublishZones(ctx, as.rdb, as.Zones())
}

// discover lists the zones of every account without configured zones,
// through the API and under the account's global window, and publishes
// them. Every account is tried; the errors are joined.
func (as *accounts) discover(ctx context.Context) error {
	var errs []error
	listed := false
	for _, a := range as.list {
		if !a.cfg.Discovers() {
			continue
		}
		zones, err := as.list1(ctx, a)
		if err != nil {
			errs = append(errs, fmt.Errorf("account %s: listing its zones: %w", a.cfg.Name, err))
			continue
		}
		before := len(as.zonesOf(a))
		as.set(a, zones)
		listed = true
		if len(zones) != before {
			as.log.Info().Str("account", a.cfg.Name).Int("zones", len(zones)).Msg("zones listed through the API")
		}
	}
	if listed {
		if err := as.publish(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (as *accounts) zonesOf(a *account) tasks.Zones {
	as.mu.RLock()
	defer as.mu.RUnlock()
	return as.zones[a]
}

// list1 lists one account's zones. The pages count in the token's global
// window like any API call: the first is acquired before, the others
// (50 zones a page) recorded after.
func (as *accounts) list1(ctx context.Context, a *account) (tasks.Zones, error) {
	acquired, err := as.globalSlot(ctx, a)
	if err != nil {
		return nil, err
	}
	listed, rate, err := a.api.ListZones(ctx)
	for range max(0, (len(listed)-1)/zonesPerPage) {
		if _, err := as.globalSlot(ctx, a); err != nil {
			return nil, err
		}
	}
	if rate != nil {
		a.limiter.Observe(ctx, rate.Remaining, rate.Reset, acquired)
	}
	if err != nil {
		return nil, err
	}
	zones := make(tasks.Zones, 0, len(listed))
	for _, z := range listed {
		zones = append(zones, tasks.Zone{Name: z.Name, ID: z.ID})
	}
	return zones, nil
}

// globalSlot takes a slot in the account's global window, waiting for
// one; it returns when it was taken.
func (as *accounts) globalSlot(ctx context.Context, a *account) (time.Time, error) {
	for {
		r, err := a.limiter.Acquire(ctx, limits.Need{})
		if err != nil || r.OK {
			return r.At, err
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-time.After(r.Wait):
		}
	}
}

// runDiscovery lists zones again every interval, and sooner (at most once
// a minute, or a tenth of the interval if that is shorter) when a producer
// met a host that matches no zone.
func (as *accounts) runDiscovery(ctx context.Context, every time.Duration) {
	if !slices.ContainsFunc(as.list, func(a *account) bool { return a.cfg.Discovers() }) {
		return
	}
	soonest := as.soonest
	last, failed, relist := time.Now(), false, false
	tick := time.NewTicker(min(time.Second, soonest))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-as.relist:
			relist = true
		}
		due := time.Since(last) >= every || relist && time.Since(last) >= soonest
		if !due && time.Since(last) >= soonest/2 && failed {
			due = true // retry a failed listing sooner
		}
		if !due && time.Since(last) >= soonest {
			wanted, err := tasks.ZonesWanted(ctx, as.rdb)
			due = err == nil && wanted
		}
		if !due {
			continue
		}
		last, relist = time.Now(), false
		err := as.discover(ctx)
		failed = err != nil
		if err != nil && ctx.Err() == nil {
			as.log.Warn().Err(err).Msg("listing zones failed; the zones listed before stay in use")
		}
	}
}

// zonesPerPage is how many zones one GET /zones answer lists.
const zonesPerPage = 50
