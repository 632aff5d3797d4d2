package probe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/purgeq/purgeq/batching"
	"github.com/purgeq/purgeq/internal/config"
	"github.com/purgeq/purgeq/internal/keyspace"
	"github.com/purgeq/purgeq/internal/testredis"
	"github.com/purgeq/purgeq/internal/testwait"
	"github.com/purgeq/purgeq/limits/rate"
	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/tasks"
)

var srv *testredis.Server

func TestMain(m *testing.M) { testredis.Main(m, &srv) }

// edge plays a Cloudflare edge: /stale answers a hit an hour old, every
// other path a miss. It records every request's path and headers.
type edge struct {
	base string // http://edge.example:<port>, reached through resolve
	mu   sync.Mutex
	got  []*http.Request
}

// newEdge starts the edge and returns it with the PURGE_PROBE_RESOLVE
// mapping edge.example to it.
func newEdge(t *testing.T) (*edge, config.Resolve) {
	e := &edge{}
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		e.got = append(e.got, r)
		e.mu.Unlock()
		if r.URL.Path == "/stale" {
			w.Header().Set("CF-Cache-Status", "HIT")
			w.Header().Set("Age", "3600")
		} else {
			w.Header().Set("CF-Cache-Status", "MISS")
		}
		fmt.Fprint(w, "body")
	}))
	t.Cleanup(s.Close)
	_, port, _ := net.SplitHostPort(s.Listener.Addr().String())
	var res config.Resolve
	if err := res.Decode("other.example:443:127.0.0.9, EDGE.example:" + port + ":127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	e.base = "http://edge.example:" + port
	return e, res
}

func (e *edge) requests() []*http.Request {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]*http.Request(nil), e.got...)
}

// repurges records the Repurge calls.
type repurges struct {
	mu    sync.Mutex
	items []string
}

func (r *repurges) repurge(_ context.Context, zone, item string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.items = append(r.items, zone+" "+item)
	return nil
}

func (r *repurges) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.items...)
}

// start runs a prober for cfg (fetching without the settling delay) until
// the test ends.
func start(t *testing.T, cfg config.Probes, h History, rp Repurge) *Prober {
	p := New(cfg, h, rp, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel))
	p.settle = 0
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return p
}

func newHistory(t *testing.T) (*batching.History, *redis.Client) {
	rdb := testredis.Connect(t)
	testredis.Flush(t, rdb)
	return batching.NewHistory(rdb, time.Hour), rdb
}

// accept remembers a files call of zone z1 as the call handler does and
// tells the prober.
func accept(t *testing.T, h *batching.History, p *Prober, id string, items ...string) *tasks.Call {
	c := &tasks.Call{ID: id, Zone: "z1", Kind: purge.Files, Items: items}
	for range items {
		c.Sources = append(c.Sources, "req-"+id)
	}
	if err := h.Remember(context.Background(), c, "default", "cf-"+id); err != nil {
		t.Fatal(err)
	}
	p.Accepted(c, time.Now())
	return c
}

// verification waits until the history shows url's entries verified as
// want (newest first) and returns them.
func verification(t *testing.T, h *batching.History, url string, want ...batching.Verification) []batching.Entry {
	t.Helper()
	zones := tasks.Zones{{Name: "edge.example", ID: "z1"}}
	var es []batching.Entry
	testwait.For(t, 10*time.Second, fmt.Sprintf("history of %s verified %v", url, want), func() bool {
		var err error
		es, err = h.Find(context.Background(), zones, url, "")
		if err != nil {
			t.Fatal(err)
		}
		if len(es) != len(want) {
			return false
		}
		for i, e := range es {
			if e.Verification != want[i] {
				return false
			}
		}
		return true
	})
	return es
}

// TestVerification: with PURGE_VERIFY=1, a URL the edge still serves from
// before the purge (HIT, Age 3600) is purged exactly once more and its
// history entry says "repurged"; a miss says "fresh". When the re-purge's
// own call finds the edge stale again, that entry says "stale" and
// nothing is purged again: one re-purge, never a loop.
func TestVerification(t *testing.T) {
	ed, res := newEdge(t)
	h, _ := newHistory(t)
	var rp repurges
	p := start(t, config.Probes{Verify: 1, WarmRate: rate.Per(100, time.Second), ProbeResolve: res}, h, rp.repurge)
	stale, fresh := ed.base+"/stale", ed.base+"/fresh"
	variant := `{"url":"` + ed.base + `/variant","headers":{"Accept-Language":"de"}}`
	accept(t, h, p, "c1", stale, fresh, variant)

	es := verification(t, h, stale, batching.Repurged)
	if es[0].Call != "c1" || es[0].CloudflareID != "cf-c1" {
		t.Errorf("stale entry %+v: want call c1", es[0])
	}
	verification(t, h, fresh, batching.Fresh)
	if got := rp.list(); len(got) != 1 || got[0] != "z1 "+stale {
		t.Fatalf("re-purges %q; want exactly one of %s", got, stale)
	}

	// the re-purge's call: the edge is still stale
	accept(t, h, p, "c2", stale)
	verification(t, h, stale, batching.Stale, batching.Repurged)
	if got := rp.list(); len(got) != 1 {
		t.Errorf("re-purges %q; want still one: a stale re-purge is not purged again", got)
	}
	testwait.For(t, 10*time.Second, "the variant's verdict", func() bool { return p.Stats().Fresh == 2 })
	variants := 0
	for _, r := range ed.requests() {
		if r.Method != http.MethodGet || r.Header.Get("User-Agent") != userAgent || r.Host != strings.TrimPrefix(ed.base, "http://") {
			t.Errorf("probe %s %s host %s UA %q", r.Method, r.URL, r.Host, r.Header.Get("User-Agent"))
		}
		if r.URL.Path == "/variant" && r.Header.Get("Accept-Language") == "de" {
			variants++
		}
	}
	if st := p.Stats(); st.Fetched != 4 || st.Repurged != 1 || st.Stale != 1 || st.Failed != 0 || st.Dropped != 0 {
		t.Errorf("stats %+v; want 4 fetched: 2 fresh, 1 repurged, 1 stale", st)
	}
	if variants != 1 {
		t.Errorf("the variant was fetched %d times with its Accept-Language header; want once", variants)
	}
}

// TestWarming: with PURGE_WARM, every purged URL is fetched once, a
// variant with its cache-key headers, never faster than PURGE_WARM_RATE
// allows (asserted on a lower bound of elapsed time, which a slow machine
// only lengthens); nothing is verified.
func TestWarming(t *testing.T) {
	ed, res := newEdge(t)
	h, _ := newHistory(t)
	const n = 12
	r := rate.Per(20, time.Second)
	p := start(t, config.Probes{Warm: true, WarmRate: r, ProbeResolve: res}, h, func(context.Context, string, string) error {
		t.Error("warming purged something")
		return nil
	})
	var items []string
	want := map[string]http.Header{}
	for i := range n {
		path := fmt.Sprintf("/w/%d", i)
		switch i % 3 {
		case 0:
			items = append(items, ed.base+path)
		case 1:
			items = append(items, `{"url":"`+ed.base+path+`","headers":{"CF-Device-Type":"mobile","Origin":"https://o.example"}}`)
			want[path] = http.Header{"Cf-Device-Type": {"mobile"}, "Origin": {"https://o.example"}}
		case 2:
			items = append(items, ed.base+path+"?v=1")
		}
	}
	items = append(items, ed.base+"/stale") // a hit: warming does not judge
	t0 := time.Now()
	accept(t, h, p, "w1", items...)
	testwait.For(t, 20*time.Second, "every URL warmed", func() bool { return len(ed.requests()) >= len(items) })
	elapsed := time.Since(t0)
	if min := time.Duration(len(items)-1) * r.Interval(); elapsed < min {
		t.Errorf("%d fetches in %v; at %v they take at least %v", len(items), elapsed, r, min)
	}
	seen := map[string]int{}
	for _, req := range ed.requests() {
		seen[req.URL.RequestURI()]++
		for name, v := range want[req.URL.Path] {
			if req.Header.Get(name) != v[0] {
				t.Errorf("%s: header %s %q; want %q", req.URL, name, req.Header.Get(name), v[0])
			}
		}
	}
	if len(seen) != len(items) {
		t.Errorf("fetched %v; want each of %d URLs", seen, len(items))
	}
	for u, k := range seen {
		if k != 1 {
			t.Errorf("%s fetched %d times; want once", u, k)
		}
	}
	if st := p.Stats(); st.Fresh+st.Stale+st.Repurged != 0 {
		t.Errorf("warming judged %+v", st)
	}
	if es := verification(t, h, ed.base+"/stale", ""); es[0].Call != "w1" {
		t.Errorf("history %+v", es)
	}
}

// TestPacer: requests asked for at once are spaced an interval apart; one
// asked for after a pause goes at once.
func TestPacer(t *testing.T) {
	p := &pacer{interval: rate.Per(10, time.Second).Interval()}
	t0 := time.Unix(1000, 0)
	for i := range 25 {
		if got, want := p.reserve(t0), t0.Add(time.Duration(i)*100*time.Millisecond); !got.Equal(want) {
			t.Fatalf("reservation %d at %v; want %v", i, got.Sub(t0), want.Sub(t0))
		}
	}
	later := t0.Add(time.Hour)
	if got := p.reserve(later); !got.Equal(later) {
		t.Errorf("after a pause: %v; want at once", got.Sub(later))
	}
}

// TestAcceptedNeverBlocks: a full queue drops (and counts) fetches instead
// of holding up the call handler; other kinds than files are not fetched;
// with neither verification nor warming nothing is queued.
func TestAcceptedNeverBlocks(t *testing.T) {
	p := New(config.Probes{Warm: true, WarmRate: rate.Per(1, time.Hour)}, nil, nil, zerolog.Nop())
	c := &tasks.Call{ID: "big", Zone: "z1", Kind: purge.Files}
	for i := range queueSize + 5 {
		c.Items = append(c.Items, fmt.Sprintf("https://a.example/%d", i))
	}
	p.Accepted(c, time.Now())
	p.Accepted(&tasks.Call{ID: "t", Zone: "z1", Kind: purge.Tags, Items: []string{"t1"}}, time.Now())
	if st := p.Stats(); st.Dropped != 5 || len(p.queue) != queueSize {
		t.Errorf("dropped %d, queued %d; want 5 and %d", st.Dropped, len(p.queue), queueSize)
	}
	off := New(config.Probes{WarmRate: rate.Per(1, time.Second)}, nil, nil, zerolog.Nop())
	off.Accepted(c, time.Now())
	if len(off.queue) != 0 {
		t.Errorf("disabled prober queued %d", len(off.queue))
	}
}

// TestSampling: PURGE_VERIFY picks about that fraction of items, the same
// ones for the same call.
func TestSampling(t *testing.T) {
	for _, f := range []float64{0, 0.1, 0.5, 1} {
		p := &Prober{verify: f}
		n := 0
		for i := range 10000 {
			item := fmt.Sprintf("https://a.example/%d", i)
			s := p.sampled("call", item)
			if s != p.sampled("call", item) {
				t.Fatalf("sampling %s is not deterministic", item)
			}
			if s {
				n++
			}
		}
		if got := float64(n) / 10000; got < f-0.02 || got > f+0.02 {
			t.Errorf("PURGE_VERIFY=%v sampled %.3f", f, got)
		}
	}
}

// TestVerdict: what counts as the old copy.
func TestVerdict(t *testing.T) {
	for _, tt := range []struct {
		status, age string
		since       time.Duration
		want        batching.Verification
		ok          bool
	}{
		{"HIT", "3600", time.Second, batching.Stale, true},
		{"hit", "3600", time.Second, batching.Stale, true},
		{"HIT", "4", 1500 * time.Millisecond, batching.Stale, true},
		{"HIT", "3", time.Second, batching.Fresh, true}, // within the slack
		{"HIT", "0", time.Second, batching.Fresh, true},
		{"HIT", "30", time.Minute, batching.Fresh, true}, // cached since the purge
		{"MISS", "", time.Second, batching.Fresh, true},
		{"EXPIRED", "3600", time.Second, batching.Fresh, true},
		{"REVALIDATED", "3600", time.Second, batching.Fresh, true},
		{"DYNAMIC", "", time.Second, batching.Fresh, true},
		{"", "", time.Second, batching.Fresh, true},
		{"HIT", "", time.Second, "", false},
		{"HIT", "soon", time.Second, "", false},
	} {
		h := http.Header{}
		if tt.status != "" {
			h.Set("CF-Cache-Status", tt.status)
		}
		if tt.age != "" {
			h.Set("Age", tt.age)
		}
		if got, ok := verdict(h, tt.since); got != tt.want || ok != tt.ok {
			t.Errorf("%s Age %q after %v: %q, %v; want %q, %v", tt.status, tt.age, tt.since, got, ok, tt.want, tt.ok)
		}
	}
}

// TestResolve: PURGE_PROBE_RESOLVE's entries, and every bad one named.
func TestResolve(t *testing.T) {
	var r config.Resolve
	if err := r.Decode("Example.com:443:192.0.2.1, example.com:80:[2001:db8::1],v6.example:8080:2001:db8::2"); err != nil {
		t.Fatal(err)
	}
	want := config.Resolve{"example.com:443": "192.0.2.1:443", "example.com:80": "[2001:db8::1]:80", "v6.example:8080": "[2001:db8::2]:8080"}
	if fmt.Sprint(r) != fmt.Sprint(want) {
		t.Errorf("%v; want %v", r, want)
	}
	err := r.Decode("a.example:443,b.example:0:192.0.2.1,c.example:443:origin.internal,:443:192.0.2.1")
	for _, bad := range []string{"a.example:443", "b.example:0", "c.example:443:origin.internal", ":443:192.0.2.1"} {
		if err == nil || !strings.Contains(err.Error(), `"`+bad) {
			t.Errorf("error %v does not name %q", err, bad)
		}
	}
}

// TestVerificationMemory measures the Redis memory a verification adds to
// the history: one letter on the item's reference in the day index, which
// usually fits in the allocation the reference already has (0 bytes) and
// sometimes needs the allocator's next size class (8 bytes more). 5,000
// item-purges (50 calls of 100 URLs) with call numbers of 5 digits (the
// worst case: "12345 " just fills 8 bytes), of 7 digits, and with every
// URL purged three times a day.
func TestVerificationMemory(t *testing.T) {
	for _, tt := range []struct {
		name   string
		seq    int64
		rounds int
	}{{"5-digit numbers", 10_000, 1}, {"7-digit numbers", 1_000_000, 1}, {"three purges a day", 1_000_000, 3}} {
		h, rdb := newHistory(t)
		ctx := context.Background()
		rdb.Set(ctx, keyspace.HistorySeq, tt.seq, 0)
		var calls []*tasks.Call
		for r := range tt.rounds {
			for i := range 50 {
				c := &tasks.Call{ID: fmt.Sprintf("m%d-%d", r, i), Zone: "z1", Kind: purge.Files}
				for j := range 100 {
					c.Items = append(c.Items, fmt.Sprintf("https://a.example/assets/%d/%d.js", i, j))
					c.Sources = append(c.Sources, "r")
				}
				if err := h.Remember(ctx, c, "default", "cf"); err != nil {
					t.Fatal(err)
				}
				calls = append(calls, c)
			}
		}
		calls = calls[len(calls)-50:] // verify the last purge of each URL
		before := historyMemory(t, rdb)
		at := time.Now()
		for _, c := range calls {
			for _, it := range c.Items {
				if err := h.SetVerification(ctx, c, it, at, batching.Repurged); err != nil {
					t.Fatal(err)
				}
			}
		}
		per := float64(historyMemory(t, rdb)-before) / 5000
		t.Logf("verification, %s: %.2f bytes of Redis per verified item-purge", tt.name, per)
		if per > 8 {
			t.Errorf("%s: %.2f bytes per verified item-purge; want at most 8", tt.name, per)
		}
		if err := h.SetVerification(ctx, calls[0], "https://a.example/never", at, batching.Fresh); !errors.Is(err, batching.ErrNotRemembered) {
			t.Errorf("verifying an item the call did not purge: %v; want ErrNotRemembered", err)
		}
	}
}

// historyMemory is what the history's keys take in Redis, every field
// counted.
func historyMemory(t *testing.T, rdb *redis.Client) int64 {
	ctx := context.Background()
	var n int64
	keys, err := rdb.Keys(ctx, keyspace.Prefix+"hist*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		v, err := rdb.Do(ctx, "MEMORY", "USAGE", k, "SAMPLES", "0").Int64()
		if err != nil {
			t.Fatal(err)
		}
		n += v
	}
	return n
}
