package cftest_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/purgeq/purgeq/limits/rate"
	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/purge/cftest"
)

const zone = "z1"

func newClient(t *testing.T, sim *cftest.Server) *purge.Client {
	t.Helper()
	c, err := purge.NewClient(purge.ClientConfig{BaseURL: sim.URL, Token: "tok", Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func classOf(err error) (purge.Class, int) {
	var pe *purge.Error
	if errors.As(err, &pe) {
		return pe.Class, pe.Code
	}
	return 0, 0
}

func TestGlobalWindowAndBlock(t *testing.T) {
	sim := cftest.NewServer(cftest.Config{Token: "tok", Zones: []string{zone}, GlobalLimit: rate.Per(5, 200*time.Millisecond), Block: 300 * time.Millisecond,
		Plan: purge.Plan{MaxFiles: 100, MaxFlex: 100, FlexRate: rate.Per(1000, time.Second), FlexBurst: 1000, URLRate: rate.Per(1000, time.Second), URLBurst: 1000}})
	defer sim.Close()
	c := newClient(t, sim)
	tags := purge.Batch{Kind: purge.Tags, Items: []string{"t"}}
	for i := range 5 {
		if _, err := c.Purge(context.Background(), zone, tags); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	_, err := c.Purge(context.Background(), zone, tags)
	if class, code := classOf(err); class != purge.RateLimited || code != purge.CodeRateLimitGlobal {
		t.Fatalf("6th call: %v, want 971", err)
	}
	blockEnd := sim.BlockedUntil()
	// Every call in the block is refused, even after the window has room.
	for time.Until(blockEnd) > 50*time.Millisecond {
		_, err := c.Purge(context.Background(), zone, tags)
		if class, _ := classOf(err); class != purge.RateLimited {
			t.Fatalf("call during block: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(time.Until(blockEnd) + 10*time.Millisecond)
	if _, err := c.Purge(context.Background(), zone, tags); err != nil {
		t.Fatalf("after block: %v", err)
	}
	st := sim.Stats()
	if st.Exceeded != 1 || st.DuringBlock == 0 || st.MaxInWindow != 5 || st.Accepted != 6 {
		t.Errorf("stats = %+v", st)
	}
}

func TestBuckets(t *testing.T) {
	plan := purge.Plan{MaxFiles: 100, MaxFlex: 100, FlexRate: rate.Per(1, time.Hour), FlexBurst: 2, URLRate: rate.Per(1, time.Hour), URLBurst: 150}
	sim := cftest.NewServer(cftest.Config{Token: "tok", Zones: []string{zone}, Plan: plan})
	defer sim.Close()
	c := newClient(t, sim)
	ctx := context.Background()
	for range 2 {
		if _, err := c.Purge(ctx, zone, purge.Batch{Kind: purge.Hosts, Items: []string{"a.example"}}); err != nil {
			t.Fatal(err)
		}
	}
	// The flex bucket is shared by tags, hosts, prefixes and everything.
	_, err := c.Purge(ctx, zone, purge.Batch{Kind: purge.Everything, Items: []string{purge.EverythingKey}})
	var pe *purge.Error
	if !errors.As(err, &pe) || pe.Code != purge.CodeRateLimitPurge || pe.Scope != purge.ScopeFlex || pe.RetryAfter <= 0 {
		t.Fatalf("3rd flex call: %v", err)
	}
	// The URL bucket counts URLs: 100 fit, 100 more do not, 50 do.
	batch := func(n int) purge.Batch {
		b := purge.Batch{Kind: purge.Files}
		for i := range n {
			b.Items = append(b.Items, fmt.Sprintf("https://a.example/%d", i))
		}
		return b
	}
	if _, err := c.Purge(ctx, zone, batch(100)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Purge(ctx, zone, batch(100)); !errors.As(err, &pe) || pe.Scope != purge.ScopeURL {
		t.Fatalf("URL bucket: %v", err)
	}
	if _, err := c.Purge(ctx, zone, batch(50)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Purge(ctx, zone, batch(101)); !errors.As(err, &pe) || pe.Code != purge.CodeTooManyFiles {
		t.Fatalf("over the cap: %v", err)
	}
	if st := sim.Stats(); st.Bucket429 != 2 || st.Items != 152 {
		t.Errorf("stats = %+v", st)
	}
}

func TestValidationCodes(t *testing.T) {
	sim := cftest.NewServer(cftest.Config{Token: "tok", Zones: []string{zone}})
	defer sim.Close()
	tests := []struct {
		body string
		code int
	}{
		{`{"purge_everything":true,"files":["https://a.example/"]}`, purge.CodeEverythingMixed},
		{`{"purge_everything":false}`, purge.CodeEverythingFalse},
		{`{"files":"https://a.example/"}`, purge.CodeNotArrays},
		{`{}`, purge.CodeMissingField},
		{`{"tags":["` + strings.Repeat("x", 1025) + `"]}`, purge.CodeTagTooLong},
		{`{"hosts":["a.example:80"]}`, purge.CodeInvalidHost},
		{`{"files":["not-a-url"]}`, purge.CodeUnableToPurge},
	}
	for _, tt := range tests {
		req, _ := http.NewRequest(http.MethodDelete, sim.URL+"/zones/"+zone+"/purge_cache", strings.NewReader(tt.body))
		req.Header.Set("Authorization", "Bearer tok")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		calls := sim.Calls()
		if last := calls[len(calls)-1]; resp.StatusCode != 400 || last.Code != tt.code {
			t.Errorf("%s: status %d code %d, want 400 %d", tt.body[:min(40, len(tt.body))], resp.StatusCode, last.Code, tt.code)
		}
	}
}

// Example shows the simulator standing in for Cloudflare in a test.
func Example() {
	sim := cftest.NewServer(cftest.Config{Token: "tok", Zones: []string{"zone-1"}})
	defer sim.Close()
	client, _ := purge.NewClient(purge.ClientConfig{BaseURL: sim.URL, Token: "tok"})
	_, err := client.Purge(context.Background(), "zone-1", purge.Batch{Kind: purge.Tags, Items: []string{"product-1"}})
	fmt.Println(err, sim.Calls()[0].Items, sim.Stats().Accepted)
	// Output: <nil> [product-1] 1
}

// twoAccounts serves "shop" (token tok-shop, zone z-shop) and "blog" (token
// tok-blog, zone z-blog), plus the default account (tok, zone z1).
func twoAccounts(t *testing.T, cfg cftest.Config) *cftest.Server {
	t.Helper()
	cfg.Token, cfg.Zones = "tok", []string{zone}
	for i, a := range cfg.Accounts {
		cfg.Accounts[i].Token = "tok-" + a.Name
		cfg.Accounts[i].Zones = map[string]string{a.Name + ".example": "z-" + a.Name}
	}
	sim := cftest.NewServer(cfg)
	t.Cleanup(sim.Close)
	return sim
}

func clientFor(t *testing.T, sim *cftest.Server, token string) *purge.Client {
	t.Helper()
	c, err := purge.NewClient(purge.ClientConfig{BaseURL: sim.URL, Token: token, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestZoneOwnership: a token purges its own accounts' zones only; another
// account's zone is refused as Cloudflare refuses it (403, code 10000),
// without touching that account's buckets or any window.
func TestZoneOwnership(t *testing.T) {
	sim := twoAccounts(t, cftest.Config{Accounts: []cftest.Account{{Name: "shop"}, {Name: "blog"}}})
	ctx := context.Background()
	tags := purge.Batch{Kind: purge.Tags, Items: []string{"t"}}
	shop, blog := clientFor(t, sim, "tok-shop"), clientFor(t, sim, "tok-blog")

	for _, c := range []struct {
		client *purge.Client
		zone   string
	}{{shop, "z-blog"}, {blog, "z-shop"}, {shop, zone}, {newClient(t, sim), "z-shop"}} {
		_, err := c.client.Purge(ctx, c.zone, tags)
		var pe *purge.Error
		if !errors.As(err, &pe) || pe.Status != http.StatusForbidden || pe.Code != purge.CodeAuth || pe.Message != "Authentication error" || pe.Class != purge.Misconfigured {
			t.Errorf("purge of %s with another account's token: %v, want 403 code 10000", c.zone, err)
		}
	}
	if _, err := shop.Purge(ctx, "z-shop", tags); err != nil {
		t.Fatalf("own zone: %v", err)
	}
	if _, err := shop.Purge(ctx, "z-none", tags); codeOf(err) != purge.CodeNoRoute {
		t.Errorf("unknown zone: %v, want 7003", err)
	}
	var accounts []string
	for _, c := range sim.Calls() {
		accounts = append(accounts, fmt.Sprintf("%s:%s:%d", c.Account, c.Zone, c.Status))
	}
	if got, want := strings.Join(accounts, " "), "blog:z-blog:403 shop:z-shop:403 default:z1:403 shop:z-shop:403 shop:z-shop:200 :z-none:404"; got != want {
		t.Errorf("calls = %s\nwant    %s", got, want)
	}
	if st := sim.Stats(); st.Calls != 2 || st.Accepted != 1 || st.MaxInWindow != 1 {
		t.Errorf("stats = %+v: refusals must not count", st)
	}
}

// codeOf is err's Cloudflare code.
func codeOf(err error) int {
	_, code := classOf(err)
	return code
}

// TestAccountBuckets: each account has its own purge buckets and caps, a
// zero field taking the Config's; one account's 429 leaves the other's
// calls accepted.
func TestAccountBuckets(t *testing.T) {
	plan := purge.Plan{MaxFiles: 100, MaxFlex: 100, FlexRate: rate.Per(1, time.Hour), FlexBurst: 3, URLRate: rate.Per(1, time.Hour), URLBurst: 100}
	sim := twoAccounts(t, cftest.Config{Plan: plan, Accounts: []cftest.Account{
		{Name: "shop", Plan: purge.Plan{FlexBurst: 1, MaxFlex: 2}},
		{Name: "blog"},
	}})
	ctx := context.Background()
	shop, blog := clientFor(t, sim, "tok-shop"), clientFor(t, sim, "tok-blog")
	tags := purge.Batch{Kind: purge.Tags, Items: []string{"a", "b"}}
	if _, err := shop.Purge(ctx, "z-shop", tags); err != nil {
		t.Fatal(err)
	}
	var pe *purge.Error
	if _, err := shop.Purge(ctx, "z-shop", tags); !errors.As(err, &pe) || pe.Code != purge.CodeRateLimitPurge || pe.Scope != purge.ScopeFlex {
		t.Fatalf("shop's 2nd flex call: %v, want 1134 (its bucket holds 1)", err)
	}
	for i := range 3 { // blog's bucket holds the Config's 3, untouched by shop's 429
		if _, err := blog.Purge(ctx, "z-blog", tags); err != nil {
			t.Fatalf("blog call %d: %v", i, err)
		}
	}
	if _, err := blog.Purge(ctx, "z-blog", tags); codeOf(err) != purge.CodeRateLimitPurge {
		t.Errorf("blog's 4th flex call: %v, want 1134", err)
	}
	if _, err := shop.Purge(ctx, "z-shop", purge.Batch{Kind: purge.Tags, Items: []string{"a", "b", "c"}}); codeOf(err) != purge.CodeTooManyTags {
		t.Errorf("3 tags for shop (cap 2): %v, want 1101", err)
	}
	if _, err := blog.Purge(ctx, "z-blog", purge.Batch{Kind: purge.Hosts, Items: []string{"a.example", "b.example", "c.example"}}); codeOf(err) != purge.CodeRateLimitPurge {
		t.Errorf("3 hosts for blog (cap 100, bucket empty): %v, want 1134", err)
	}
	// The default account has buckets of its own too.
	if _, err := newClient(t, sim).Purge(ctx, zone, tags); err != nil {
		t.Errorf("default account: %v", err)
	}
}

// TestSharedTokenWindow: the global window is per token. Two accounts on
// one token share it, and its block; an account with a token of its own
// keeps its window.
func TestSharedTokenWindow(t *testing.T) {
	roomy := purge.Plan{MaxFiles: 100, MaxFlex: 100, FlexRate: rate.Per(1000, time.Second), FlexBurst: 1000, URLRate: rate.Per(1000, time.Second), URLBurst: 1000}
	sim := cftest.NewServer(cftest.Config{Plan: roomy, GlobalLimit: rate.Per(4, time.Minute), Block: time.Minute, Accounts: []cftest.Account{
		{Name: "a", Token: "shared", Zones: map[string]string{"a.example": "z-a"}},
		{Name: "b", Token: "shared", Zones: map[string]string{"b.example": "z-b"}},
		{Name: "c", Token: "own", Zones: map[string]string{"c.example": "z-c"}},
	}})
	defer sim.Close()
	ctx := context.Background()
	shared, own := clientFor(t, sim, "shared"), clientFor(t, sim, "own")
	tags := purge.Batch{Kind: purge.Tags, Items: []string{"t"}}
	for i, z := range []string{"z-a", "z-b", "z-a", "z-b"} {
		acc, err := shared.Purge(ctx, z, tags)
		if err != nil || acc.Rate == nil || acc.Rate.Remaining != 3-i {
			t.Fatalf("call %d on %s: %+v, %v; want accepted with %d remaining", i, z, acc.Rate, err, 3-i)
		}
	}
	var pe *purge.Error
	if _, err := shared.Purge(ctx, "z-b", tags); !errors.As(err, &pe) || pe.Code != purge.CodeRateLimitGlobal || pe.Scope != purge.ScopeGlobal {
		t.Fatalf("5th call on the shared token: %v, want 971", err)
	}
	if _, err := shared.Purge(ctx, "z-a", tags); codeOf(err) != purge.CodeRateLimitGlobal {
		t.Errorf("account a during b's block: %v, want 971", err)
	}
	for i := range 4 {
		if acc, err := own.Purge(ctx, "z-c", tags); err != nil || acc.Rate.Remaining != 3-i {
			t.Fatalf("own token call %d: %+v, %v", i, acc.Rate, err)
		}
	}
	if st := sim.Stats(); st.Accepted != 8 || st.Exceeded != 1 || st.DuringBlock != 1 || st.MaxInWindow != 4 {
		t.Errorf("stats = %+v", st)
	}
}

// TestRatelimitHeadersAndSpend: every answer tells the token's window as
// Cloudflare does, and Spend plays another client of the token: the next
// answer shows the slots gone, and the window refuses what they took.
func TestRatelimitHeadersAndSpend(t *testing.T) {
	sim := cftest.NewServer(cftest.Config{Token: "tok", Zones: []string{zone}, GlobalLimit: rate.Per(10, time.Minute), Block: time.Minute})
	defer sim.Close()
	get := func(token string) (*http.Response, error) {
		req, _ := http.NewRequest(http.MethodGet, sim.URL+"/zones", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		return resp, err
	}
	resp, err := get("tok")
	if err != nil {
		t.Fatal(err)
	}
	if rl, pol := resp.Header.Get("Ratelimit"), resp.Header.Get("Ratelimit-Policy"); rl != `"default";r=9;t=60` || pol != `"default";q=10;w=60` {
		t.Errorf("headers Ratelimit %q, Ratelimit-Policy %q", rl, pol)
	}
	if resp, err := get("wrong"); err != nil || resp.StatusCode != http.StatusForbidden || resp.Header.Get("Ratelimit") != `"default";r=10;t=0` {
		t.Errorf("unknown token: %v %v, want 403 showing an empty window", resp.Header, err)
	}

	if n := sim.Spend("tok", 5); n != 5 {
		t.Fatalf("Spend(5) took %d", n)
	}
	c := newClient(t, sim)
	tags := purge.Batch{Kind: purge.Tags, Items: []string{"t"}}
	if acc, err := c.Purge(context.Background(), zone, tags); err != nil || acc.Rate == nil || acc.Rate.Remaining != 3 || acc.Rate.Reset <= 50*time.Second {
		t.Fatalf("after spending 5 of 10: %+v, %v; want 3 remaining", acc.Rate, err)
	}
	if n := sim.Spend("tok", 5); n != 3 {
		t.Errorf("Spend(5) with 3 left took %d, want 3", n)
	}
	_, err = c.Purge(context.Background(), zone, tags)
	var pe *purge.Error
	if !errors.As(err, &pe) || pe.Code != purge.CodeRateLimitGlobal || pe.Rate == nil || pe.Rate.Remaining != 0 {
		t.Fatalf("window spent elsewhere: %v, want 971 with 0 remaining", err)
	}
	if n := sim.Spend("tok", 1); n != 0 {
		t.Errorf("Spend during the block took %d", n)
	}
	if st := sim.Stats(); st.Spent != 8 || st.MaxInWindow != 10 || st.Exceeded != 1 {
		t.Errorf("stats = %+v", st)
	}
	defer func() {
		if recover() == nil {
			t.Error("Spend with an unknown token did not panic")
		}
	}()
	sim.Spend("wrong", 1)
}

// TestZonesEndpoint checks GET /zones on the wire: Cloudflare's envelope,
// result_info, paging (per_page 20 unless told, at most 50), the name
// filter, and only the token's zones.
func TestZonesEndpoint(t *testing.T) {
	zones := map[string]string{}
	for i := range 60 {
		zones[fmt.Sprintf("s%02d.example", i)] = fmt.Sprintf("id-%02d", i)
	}
	sim := twoAccounts(t, cftest.Config{Accounts: []cftest.Account{{Name: "shop"}}})
	big := cftest.NewServer(cftest.Config{Accounts: []cftest.Account{{Name: "agency", Token: "tok-agency", Zones: zones}}})
	defer big.Close()

	type page struct {
		Success  bool              `json:"success"`
		Errors   []purge.APIError  `json:"errors"`
		Messages []purge.APIError  `json:"messages"`
		Result   []json.RawMessage `json:"result"`
		Info     map[string]int    `json:"result_info"`
	}
	list := func(s *cftest.Server, token, query string) (int, page) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, s.URL+"/zones"+query, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var p page
		if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, p
	}
	info := func(p page) string {
		return fmt.Sprintf("page=%d per_page=%d count=%d total_count=%d total_pages=%d",
			p.Info["page"], p.Info["per_page"], p.Info["count"], p.Info["total_count"], p.Info["total_pages"])
	}

	status, p := list(sim, "tok-shop", "")
	if status != 200 || !p.Success || p.Errors == nil || p.Messages == nil || len(p.Result) != 1 || info(p) != "page=1 per_page=20 count=1 total_count=1 total_pages=1" {
		t.Fatalf("shop's zones: %d %+v", status, p)
	}
	var z struct {
		ID, Name, Status string
		Account          struct{ ID, Name string }
	}
	if err := json.Unmarshal(p.Result[0], &z); err != nil || z.ID != "z-shop" || z.Name != "shop.example" || z.Status != "active" || z.Account.Name != "shop" || len(z.Account.ID) != 32 {
		t.Errorf("zone = %s", p.Result[0])
	}
	if _, p := list(sim, "tok", ""); len(p.Result) != 1 || !strings.Contains(string(p.Result[0]), `"name":"z1"`) {
		t.Errorf("default account's zones: %+v", p)
	}
	if status, p := list(sim, "wrong", ""); status != 403 || p.Success || len(p.Errors) != 1 || p.Errors[0].Code != purge.CodeAuth {
		t.Errorf("unknown token: %d %+v", status, p)
	}

	for _, tt := range []struct{ query, info, first string }{
		{"", "page=1 per_page=20 count=20 total_count=60 total_pages=3", "s00"},
		{"?page=3&per_page=25", "page=3 per_page=25 count=10 total_count=60 total_pages=3", "s50"},
		{"?page=2&per_page=500", "page=2 per_page=50 count=10 total_count=60 total_pages=2", "s50"},
		{"?page=9&per_page=50", "page=9 per_page=50 count=0 total_count=60 total_pages=2", ""},
		{"?page=x&per_page=1", "page=1 per_page=5 count=5 total_count=60 total_pages=12", "s00"},
		{"?name=S07.example", "page=1 per_page=20 count=1 total_count=1 total_pages=1", "s07"},
		{"?name=nope.example", "page=1 per_page=20 count=0 total_count=0 total_pages=0", ""},
	} {
		status, p := list(big, "tok-agency", tt.query)
		first := ""
		if len(p.Result) > 0 {
			first = string(p.Result[0])
		}
		if status != 200 || p.Result == nil || info(p) != tt.info || !strings.Contains(first, tt.first) {
			t.Errorf("%q: %d %s first %s\nwant %s first %s", tt.query, status, info(p), first, tt.info, tt.first)
		}
	}

	req, _ := http.NewRequest(http.MethodPost, big.URL+"/zones", nil)
	req.Header.Set("Authorization", "Bearer tok-agency")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 404 {
		t.Errorf("POST /zones: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
}

// TestImpossibleAccounts: a configuration Cloudflare could not have is
// refused at once, naming what is wrong.
func TestImpossibleAccounts(t *testing.T) {
	for _, tt := range []struct {
		cfg  cftest.Config
		want string
	}{
		{cftest.Config{Token: "tok", Zones: []string{"z"}, Accounts: []cftest.Account{{Name: "b", Token: "t2", Zones: map[string]string{"b.example": "z"}}}}, `zone id z is in accounts "default" and "b"`},
		{cftest.Config{Accounts: []cftest.Account{{Name: "a", Token: "t"}, {Name: "a", Token: "u"}}}, `two accounts are named "a"`},
		{cftest.Config{Accounts: []cftest.Account{{Name: "a"}}}, `account "a" needs a name and a token`},
		{cftest.Config{Accounts: []cftest.Account{{Name: "a", Token: "t", Zones: map[string]string{"a.example": "z", "www.a.example": "z"}}}}, `account "a" lists zone id z twice`},
	} {
		func() {
			defer func() {
				if got := fmt.Sprint(recover()); !strings.Contains(got, tt.want) {
					t.Errorf("panic %q, want %q", got, tt.want)
				}
			}()
			cftest.NewUnstartedServer(tt.cfg)
		}()
	}
}
