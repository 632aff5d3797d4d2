package web_test

import (
	"context"
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/purgeq/purgeq/batching"
	"github.com/purgeq/purgeq/internal/testredis"
	"github.com/purgeq/purgeq/internal/web"
	"github.com/purgeq/purgeq/limits"
	"github.com/purgeq/purgeq/limits/rate"
	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/tasks"
)

var statusZones = tasks.Zones{{Name: "example.com", ID: "zone-a"}, {Name: "example.org", ID: "zone-b"}}

var statusLimits = limits.Config{Token: "status-test", Global: rate.Per(1000, 5*time.Minute),
	Flex: limits.Bucket{Rate: rate.Per(5, time.Minute), Burst: 25}, URL: limits.Bucket{Rate: rate.Per(500, time.Minute), Burst: 2500}}

// statusSource wires the status page the way the worker does, for one
// account ("default") on rdb.
func statusSource(t *testing.T, rdb redis.UniversalClient) *web.StatusSource {
	t.Helper()
	lim, err := limits.New(rdb, statusLimits)
	if err != nil {
		t.Fatal(err)
	}
	hist := batching.NewHistory(rdb, time.Hour)
	return &web.StatusSource{
		Outbox:  batching.NewOutbox(rdb, time.Hour),
		Dead:    batching.NewDeadLetters(rdb),
		History: hist,
		Find: func(ctx context.Context, item, zone string) ([]batching.Entry, error) {
			return hist.Find(ctx, statusZones, item, zone)
		},
		CallLog: batching.NewCallLog(rdb),
		Accounts: func() []web.StatusAccount {
			return []web.StatusAccount{{Name: "default", Limits: lim, Config: statusLimits}}
		},
		ZoneName: func(id string) (string, string) {
			if z, ok := statusZones.Lookup(id); ok {
				return z.Name, "default"
			}
			return "", ""
		},
	}
}

// statusState puts into rdb what the page shows: items waiting in two
// zones, a flex cooldown, a dead letter, an accepted call in the history
// and calls in the call log (5 this minute, 2 ten minutes ago).
func statusState(t *testing.T, rdb redis.UniversalClient) (cooldownEnd time.Time) {
	t.Helper()
	ctx := context.Background()
	ob := batching.NewOutbox(rdb, time.Hour)
	admit := func(id, zone string, kind purge.Kind, items ...string) {
		r := &tasks.Request{ID: id, EnqueuedAt: time.Now().UnixMilli(), Producer: "cms-blog", Source: "post 42",
			Zones: map[string]map[purge.Kind][]string{zone: {kind: items}}}
		if err := ob.Admit(ctx, r, 0, 1); err != nil {
			t.Fatal(err)
		}
	}
	// pop takes a lane's items as one call
	pop := func(zone string, kind purge.Kind) *tasks.Call {
		res, err := ob.Pop(ctx, batching.PopRequest{Lane: batching.Lane{Zone: zone, Kind: kind}, Cap: 100, AllowPartial: true, Window: 10, Lease: time.Hour, Owner: "test"})
		if err != nil || res.Status != batching.Popped {
			t.Fatalf("pop %s %s: %+v, %v", zone, kind, res, err)
		}
		c, err := tasks.DecodeCall(res.Call)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}

	admit("req-hist", "zone-b", purge.Hosts, "static.example.org")
	c := pop("zone-b", purge.Hosts)
	if _, err := ob.Record(ctx, c, []int{0}, nil, batching.Failure{}, nil); err != nil {
		t.Fatal(err)
	}
	if err := batching.NewHistory(rdb, time.Hour).Remember(ctx, c, "default", "cf-purge-0001"); err != nil {
		t.Fatal(err)
	}
	admit("req-dead", "zone-b", purge.Tags, "gone-tag")
	c = pop("zone-b", purge.Tags)
	if _, err := ob.Record(ctx, c, nil, []int{0}, batching.Failure{Reason: "permanent", Code: 1234, Message: "bad tag"}, nil); err != nil {
		t.Fatal(err)
	}

	admit("req-wait-1", "zone-a", purge.Files, "https://example.com/a", "https://example.com/b", "https://example.com/c")
	admit("req-wait-2", "zone-a", purge.Tags, "product-1", "product-2")
	admit("req-wait-3", "zone-b", purge.Files, "https://example.org/x")

	lim, err := limits.New(rdb, statusLimits)
	if err != nil {
		t.Fatal(err)
	}
	end, err := lim.Cooldown(ctx, purge.ScopeFlex, 3*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	calls := batching.NewCallLog(rdb)
	for i := range 7 {
		at := time.Now()
		if i >= 5 {
			at = at.Add(-10 * time.Minute)
		}
		if err := calls.Count(ctx, "default", at); err != nil {
			t.Fatal(err)
		}
	}
	return end
}

func serveStatus(t *testing.T, src *web.StatusSource, o web.Options) *httptest.Server {
	t.Helper()
	rdb := testredis.Connect(t)
	o.Status, o.RedisConn, o.Redis, o.Gatherer = src, asynq.RedisClientOpt{Addr: srv.Addr}, rdb, prometheus.NewRegistry()
	h, closeUI, err := web.Handler(o)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(h)
	t.Cleanup(func() { ts.Close(); closeUI() })
	return ts
}

var tags = regexp.MustCompile(`<[^>]*>`)

// visible is the page's text as a reader sees it: tags out, entities
// decoded, white space collapsed.
func visible(page string) string {
	if _, body, ok := strings.Cut(page, "<body>"); ok {
		page = body
	}
	return strings.Join(strings.Fields(html.UnescapeString(tags.ReplaceAllString(page, " "))), " ")
}

// TestStatusPage: the page shows, from real Redis, what waits per account
// and zone with its kinds, the remaining limits and a cooldown with its
// end, the chart of calls per minute (60 bars), the dead-letter count, the
// last call with its Cloudflare id and requests, and history search
// results; a bad search says why and user input is escaped.
func TestStatusPage(t *testing.T) {
	rdb := testredis.Connect(t)
	testredis.Flush(t, rdb)
	end := statusState(t, rdb)
	ts := serveStatus(t, statusSource(t, rdb), web.Options{})

	code, page := do(t, "GET", ts.URL+"/status", false, nil)
	if code != 200 {
		t.Fatalf("GET /status: %d\n%s", code, page)
	}
	text := visible(page)
	for _, want := range []string{
		"6 items waiting in 2 zones",
		"default example.com 5 ", "files 3 · tags 2",
		"default example.org 1 ", "files 1",
		"global window 1,000 1000/5m none",
		"URL bucket (URLs) 2,500 2,500, refilled 500/1m none",
		"Calls sent in the last hour: 7 , in the last 5 minutes: 5 ; busiest minute: 5. The global limit's average, 200 a minute, is off this scale.",
		"Entries in the dead-letter queue: 1 ",
		"default example.org hosts cf-purge-0001 req-hist (cms-blog post 42)",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the page does not show %q:\n%s", want, text)
		}
	}
	// the flex bucket's cooldown, with its end (by the Redis clock)
	m := regexp.MustCompile(`everything bucket 0 25, refilled 5/1m until (\S+ \S+) UTC \((\S+) left\)`).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("the page does not show the flex bucket's cooldown:\n%s", text)
	}
	if shown, err := time.Parse("2006-01-02 15:04:05", m[1]); err != nil || shown.Sub(end).Abs() > 2*time.Second {
		t.Errorf("the cooldown ends at %s, want %s", m[1], end.UTC())
	}
	if left, err := time.ParseDuration(m[2]); err != nil || left > 3*time.Minute || left < 2*time.Minute {
		t.Errorf("the cooldown has %s left, want at most 3m (and not much less)", m[2])
	}
	if n := strings.Count(page, `<rect class="bar"`); n != 60 {
		t.Errorf("the chart has %d bars, want 60", n)
	}
	now := time.Now().UTC()
	if !strings.Contains(page, now.Format("15:04")+" UTC: 5 calls") && !strings.Contains(page, now.Add(-time.Minute).Format("15:04")+" UTC: 5 calls") {
		t.Errorf("no bar of 5 calls for the current minute")
	}
	if !strings.Contains(page, now.Add(-10*time.Minute).Format("15:04")+" UTC: 2 calls") && !strings.Contains(page, now.Add(-11*time.Minute).Format("15:04")+" UTC: 2 calls") {
		t.Errorf("no bar of 2 calls ten minutes ago")
	}

	search := func(q url.Values) (int, string) {
		code, page := do(t, "GET", ts.URL+"/status?"+q.Encode(), false, nil)
		return code, visible(page)
	}
	if code, text := search(url.Values{"item": {"STATIC.example.org"}}); code != 200 ||
		!strings.Contains(text, "Search the history") || strings.Count(text, "cf-purge-0001") != 2 {
		t.Errorf("searching a purged host: %d, want its entry among the results:\n%s", code, text)
	}
	if code, text := search(url.Values{"item": {"static.example.org"}, "zone": {"example.com"}}); code != 200 || !strings.Contains(text, "No purge of static.example.org") {
		t.Errorf("searching another zone: %d\n%s", code, text)
	}
	if code, text := search(url.Values{"item": {"x"}, "zone": {"nope"}}); code != 200 || !strings.Contains(text, "nope: zone is not one of the configured zones (example.com=zone-a,example.org=zone-b)") {
		t.Errorf("searching an unknown zone: %d, want the reason:\n%s", code, text)
	}
	if _, page := do(t, "GET", ts.URL+"/status?item="+url.QueryEscape(`<b>x</b>`), false, nil); strings.Contains(page, "<b>x</b>") {
		t.Errorf("the search term is not escaped")
	}
}

// TestStatusListsDeepestZones: with more zones waiting than the page
// lists, it shows the 50 deepest, deepest first, and counts the rest.
func TestStatusListsDeepestZones(t *testing.T) {
	rdb := testredis.Connect(t)
	testredis.Flush(t, rdb)
	r := &tasks.Request{ID: "many", EnqueuedAt: time.Now().UnixMilli(), Zones: map[string]map[purge.Kind][]string{}}
	for i := range 55 {
		var items []string
		for j := range i + 1 {
			items = append(items, fmt.Sprintf("t%d", j))
		}
		r.Zones[fmt.Sprintf("zone-%02d", i)] = map[purge.Kind][]string{purge.Tags: items}
	}
	if err := batching.NewOutbox(rdb, time.Hour).Admit(context.Background(), r, 0, 1); err != nil {
		t.Fatal(err)
	}
	ts := serveStatus(t, statusSource(t, rdb), web.Options{})
	code, page := do(t, "GET", ts.URL+"/status", false, nil)
	text := visible(page)
	if code != 200 || !strings.Contains(text, "1,540 items waiting in 55 zones") ||
		!strings.Contains(text, "and 5 more zones") {
		t.Errorf("55 zones: %d\n%s", code, text)
	}
	section, _, _ := strings.Cut(page, `id="limits"`)
	if n := strings.Count(section, "<td>zone-"); n != 50 {
		t.Errorf("%d zones listed, want 50", n)
	}
	if !strings.Contains(text, "— zone-54 55 ") || strings.Index(text, "zone-54") > strings.Index(text, "zone-53") || strings.Contains(section, "<td>zone-04<") {
		t.Errorf("not the deepest first (an unknown zone shows its id and no account):\n%s", text)
	}
}

// TestStatusAuth: with credentials configured, the page needs them; it
// is absent when the worker gives it no source.
func TestStatusAuth(t *testing.T) {
	rdb := testredis.Connect(t)
	testredis.Flush(t, rdb)
	ts := serveStatus(t, statusSource(t, rdb), web.Options{User: user, Password: pass})
	if code, _ := do(t, "GET", ts.URL+"/status", false, nil); code != http.StatusUnauthorized {
		t.Errorf("without credentials: %d, want 401", code)
	}
	req, _ := http.NewRequest("GET", ts.URL+"/status", nil)
	req.SetBasicAuth(user, "wrong")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("with a wrong password: %v %v, want 401", resp.Status, err)
	} else {
		resp.Body.Close()
	}
	if code, page := do(t, "GET", ts.URL+"/status", true, nil); code != 200 || !strings.Contains(page, "purgeq status") {
		t.Errorf("with credentials: %d %.200s", code, page)
	}
	if code, _ := do(t, "POST", ts.URL+"/status", true, nil); code != http.StatusMethodNotAllowed {
		t.Errorf("POST /status: %d, want 405", code)
	}

	bare := serveStatus(t, nil, web.Options{})
	if code, _ := do(t, "GET", bare.URL+"/status", false, nil); code != 404 {
		t.Errorf("without a status source: %d, want 404", code)
	}
}

// TestStatusRedisDown: when Redis does not answer, the page says what it
// could not read, with 503.
func TestStatusRedisDown(t *testing.T) {
	ts := serveStatus(t, statusSource(t, testredisDown(t)), web.Options{})
	code, page := do(t, "GET", ts.URL+"/status", false, nil)
	text := visible(page)
	if code != http.StatusServiceUnavailable || !strings.Contains(text, "Some of the page could not be read") ||
		!strings.Contains(text, "outbox:") || !strings.Contains(text, "limits of account default:") {
		t.Errorf("Redis down: %d\n%s", code, text)
	}
}
