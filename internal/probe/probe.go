// Package probe fetches URLs after Cloudflare accepted their purge, off
// the purge pipeline: verification (PURGE_VERIFY) GETs a fraction of them
// once and reads CF-Cache-Status and Age — a hit cached before the purge
// means the edge this worker reaches still serves the old copy, so the URL
// is purged once more — and warming (PURGE_WARM) GETs every one once, so
// that the origin refills the cache before a visitor asks.
//
// A probe proves what one edge location (the one the worker's network
// reaches) answered, not what every location holds; docs/verification.md
// says what it does and does not show.
//
// Every request goes through one bounded queue and a small pool of
// goroutines, paced per worker at PURGE_WARM_RATE (verification and
// warming share it). None is a Cloudflare API call, so none counts against
// the API limits. Accepted never blocks: when the queue is full the URL is
// not fetched, and the drop is counted and logged. Nothing here fails a
// purge.
package probe

import (
	"context"
	"crypto/sha1"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/purgeq/purgeq/batching"
	"github.com/purgeq/purgeq/internal/config"
	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/tasks"
)

// Tuning that is not worth configuring.
const (
	// queueSize bounds the URLs waiting for a fetch (a few MB at most).
	queueSize = 10000
	// fetchers run the fetches; pacing, not their number, bounds the rate
	// unless the edge answers slower than fetchers/rate.
	fetchers = 8
	// timeout bounds one fetch, body included, and one re-purge.
	timeout = 10 * time.Second
	// settle is how long after the acceptance a URL is fetched at the
	// earliest: Cloudflare's purge reaches its edges within a fraction of
	// a second, and a fetch before that would find, or refill, the old copy.
	settle = time.Second
	// ageSlack is how much older than the time since the acceptance a hit
	// may be and still count as fresh: Age is whole seconds, and the edge
	// may have dropped the copy while the API's answer was on its way.
	ageSlack = 2 * time.Second
	// repurgeWindow: an item is purged again for a verification at most
	// once per window, whatever the edge keeps answering.
	repurgeWindow = time.Hour
	// userAgent names the requests in the origin's and Cloudflare's logs.
	userAgent = "purgeq-probe"
)

// History is what the prober needs of batching.History.
type History interface {
	SetVerification(ctx context.Context, c *tasks.Call, item string, at time.Time, v batching.Verification) error
	ClaimRepurge(ctx context.Context, zone string, kind purge.Kind, item string, window time.Duration) (bool, error)
}

// Repurge queues one more purge of item (a files key, as in a call's
// Items) of zone id zoneID, as a new request through the normal queue.
type Repurge func(ctx context.Context, zoneID, item string) error

// Prober fetches purged URLs in the background.
type Prober struct {
	verify  float64
	warm    bool
	history History
	repurge Repurge
	log     zerolog.Logger
	client  *http.Client
	pace    *pacer
	settle  time.Duration
	queue   chan job
	stats   counters
	lastLog atomic.Int64 // when a drop was last logged (Unix ns)
}

// job is one URL to fetch.
type job struct {
	call   *tasks.Call
	item   string
	at     time.Time
	verify bool
}

// New returns a prober for cfg (config.Load checked it). Start it with
// Run; until then, and when cfg asks for neither verification nor
// warming, Accepted does nothing but count drops.
func New(cfg config.Probes, h History, repurge Repurge, log zerolog.Logger) *Prober {
	dialer := &net.Dialer{Timeout: timeout}
	resolve := cfg.ProbeResolve
	transport := &http.Transport{
		Proxy: nil, // straight to the edge, whatever HTTP_PROXY says
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if to, ok := resolve[strings.ToLower(addr)]; ok {
				addr = to
			}
			return dialer.DialContext(ctx, network, addr)
		},
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: fetchers,
		IdleConnTimeout:     time.Minute,
	}
	var pace *pacer
	if !cfg.WarmRate.IsZero() {
		pace = &pacer{interval: cfg.WarmRate.Interval()}
	}
	return &Prober{
		verify: cfg.Verify, warm: cfg.Warm, history: h, repurge: repurge,
		log: log.With().Str("component", "probe").Logger(),
		client: &http.Client{Transport: transport, Timeout: timeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		pace: pace, settle: settle, queue: make(chan job, queueSize),
	}
}

// enabled: verification or warming is on.
func (p *Prober) enabled() bool { return p.verify > 0 || p.warm }

// Accepted queues the fetches a call Cloudflare accepted at at needs:
// every URL when warming, the sampled ones for verification (one fetch
// serves both). Other kinds than files are not fetched. It never blocks.
func (p *Prober) Accepted(c *tasks.Call, at time.Time) {
	if c.Kind != purge.Files || !p.enabled() {
		return
	}
	for _, item := range c.Items {
		verify := p.sampled(c.ID, item)
		if !verify && !p.warm {
			continue
		}
		select {
		case p.queue <- job{call: c, item: item, at: at, verify: verify}:
		default:
			p.drop()
		}
	}
}

// sampled picks a fraction PURGE_VERIFY of a call's items, the same ones
// whenever asked (a hash of call id and item), different ones each call.
func (p *Prober) sampled(callID, item string) bool {
	if p.verify <= 0 {
		return false
	}
	sum := sha1.Sum([]byte(callID + "\x00" + item))
	return float64(binary.BigEndian.Uint64(sum[:8]))/math.MaxUint64 < p.verify
}

// drop counts a fetch the full queue refused, and logs at most one line a
// minute about it.
func (p *Prober) drop() {
	n := p.stats.dropped.Add(1)
	now := time.Now().UnixNano()
	last := p.lastLog.Load()
	if now-last >= int64(time.Minute) && p.lastLog.CompareAndSwap(last, now) {
		p.log.Warn().Int64("dropped_total", n).Int("queue", queueSize).Msg("probe queue full: URLs left unfetched (verification and warming are best effort)")
	}
}

// Run fetches until ctx ends; what still waits then is not fetched.
func (p *Prober) Run(ctx context.Context) {
	if !p.enabled() {
		return
	}
	var wg sync.WaitGroup
	for range fetchers {
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case j := <-p.queue:
					p.fetch(ctx, j)
				}
			}
		})
	}
	wg.Wait()
}

// fetch GETs one URL, then judges and records what a verification found.
func (p *Prober) fetch(ctx context.Context, j job) {
	if sleep(ctx, time.Until(j.at.Add(p.settle))) != nil || p.pace.wait(ctx) != nil {
		return
	}
	log := p.log.With().Str("call", j.call.ID).Str("item", j.item).Logger()
	h, err := p.get(ctx, j.item)
	if err != nil {
		p.stats.failed.Add(1)
		log.Debug().Err(err).Msg("probe failed")
		return
	}
	p.stats.fetched.Add(1)
	if !j.verify {
		return
	}
	v, ok := verdict(h, time.Since(j.at))
	if !ok {
		log.Debug().Msg("a cache hit without an Age: no verdict")
		return
	}
	if v == batching.Stale {
		v = p.repurgeOnce(ctx, log, j)
	}
	p.stats.count(v)
	err = p.history.SetVerification(ctx, j.call, j.item, j.at, v)
	switch {
	case errors.Is(err, batching.ErrNotRemembered):
		log.Debug().Err(err).Msg("verification not kept")
	case err != nil:
		log.Warn().Err(err).Msg("keeping the verification in the purge history failed")
	}
}

// get fetches item's URL with its cache-key headers, discards the body
// (read to the end, so that the edge completes its refill) and returns
// the response's headers. Redirects are not followed.
func (p *Prober) get(ctx context.Context, item string) (http.Header, error) {
	f, err := purge.ParseFileKey(item)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.URL, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", userAgent)
	for name, value := range f.Headers {
		req.Header.Set(name, value)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return nil, err
	}
	return resp.Header, nil
}

// verdict judges a verification's response, since the time from the
// purge's acceptance to the response: a hit whose Age reaches back before
// the purge (beyond ageSlack) is the old copy; anything else (a miss,
// expired, revalidated, dynamic, or a hit cached since) is fresh. A hit
// without a readable Age gets no verdict.
func verdict(h http.Header, since time.Duration) (batching.Verification, bool) {
	if !strings.EqualFold(strings.TrimSpace(h.Get("CF-Cache-Status")), "HIT") {
		return batching.Fresh, true
	}
	age, err := strconv.ParseInt(strings.TrimSpace(h.Get("Age")), 10, 64)
	if err != nil || age < 0 {
		return "", false
	}
	if time.Duration(age)*time.Second > since+ageSlack {
		return batching.Stale, true
	}
	return batching.Fresh, true
}

// repurgeOnce purges a stale item once more, unless it was purged again
// for a verification within repurgeWindow: Repurged when queued, else
// Stale.
func (p *Prober) repurgeOnce(ctx context.Context, log zerolog.Logger, j job) batching.Verification {
	ok, err := p.history.ClaimRepurge(ctx, j.call.Zone, j.call.Kind, j.item, repurgeWindow)
	if err != nil || !ok {
		log.Warn().Err(err).Msg("the edge served a copy from before the purge; not purged again (purged again for a verification within the last hour, or Redis failed)")
		return batching.Stale
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := p.repurge(rctx, j.call.Zone, j.item); err != nil {
		log.Warn().Err(err).Msg("the edge served a copy from before the purge; queueing another purge failed")
		return batching.Stale
	}
	log.Warn().Msg("the edge served a copy from before the purge; purged once more")
	return batching.Repurged
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// pacer spaces requests at least interval apart (no bursts).
type pacer struct {
	mu       sync.Mutex
	interval time.Duration
	next     time.Time
}

// reserve returns when a request asked for at now may go, and holds that
// slot.
func (p *pacer) reserve(now time.Time) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	at := now
	if p.next.After(now) {
		at = p.next
	}
	p.next = at.Add(p.interval)
	return at
}

// wait blocks until the next slot (nil pacer: at once).
func (p *pacer) wait(ctx context.Context) error {
	if p == nil {
		return ctx.Err()
	}
	return sleep(ctx, time.Until(p.reserve(time.Now())))
}

// Stats counts what the prober did since it started.
type Stats struct {
	// Fetched and Failed count requests (a failure: no answer within the
	// timeout, a refused connection…); Dropped counts URLs the full queue
	// refused.
	Fetched, Failed, Dropped int64
	// Fresh, Stale and Repurged count verification verdicts.
	Fresh, Stale, Repurged int64
}

type counters struct {
	fetched, failed, dropped, fresh, stale, repurged atomic.Int64
}

func (c *counters) count(v batching.Verification) {
	switch v {
	case batching.Fresh:
		c.fresh.Add(1)
	case batching.Stale:
		c.stale.Add(1)
	case batching.Repurged:
		c.repurged.Add(1)
	}
}

// Stats returns the counts so far (for metrics and tests).
func (p *Prober) Stats() Stats {
	c := &p.stats
	return Stats{Fetched: c.fetched.Load(), Failed: c.failed.Load(), Dropped: c.dropped.Load(),
		Fresh: c.fresh.Load(), Stale: c.stale.Load(), Repurged: c.repurged.Load()}
}
