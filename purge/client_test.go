package purge_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/purgeq/purgeq/limits/rate"
	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/purge/cftest"
)

const (
	token = "s3cret-token-value"
	zone  = "023e105f4ecef8ad9ca31a8372d0c353"
)

func TestBodyShapes(t *testing.T) {
	withHeaders, err := purge.NormalizeFile(purge.File{URL: "https://www.example.com/a", Headers: map[string]string{"CF-IPCountry": "ES"}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		batch purge.Batch
		want  string
	}{
		{purge.Batch{Kind: purge.Files, Items: []string{"https://www.example.com/a.css?x=1&y=<2>"}}, `{"files":["https://www.example.com/a.css?x=1&y=<2>"]}`},
		{purge.Batch{Kind: purge.Files, Items: []string{"https://a.example/", withHeaders}}, `{"files":["https://a.example/",{"url":"https://www.example.com/a","headers":{"CF-IPCountry":"ES"}}]}`},
		{purge.Batch{Kind: purge.Tags, Items: []string{"product-1234", "a&b"}}, `{"tags":["product-1234","a&b"]}`},
		{purge.Batch{Kind: purge.Hosts, Items: []string{"www.example.com"}}, `{"hosts":["www.example.com"]}`},
		{purge.Batch{Kind: purge.Prefixes, Items: []string{"www.example.com/blog/"}}, `{"prefixes":["www.example.com/blog/"]}`},
		{purge.Batch{Kind: purge.Everything, Items: []string{purge.EverythingKey}}, `{"purge_everything":true}`},
	}
	for _, tt := range tests {
		got, err := tt.batch.Body()
		if err != nil || string(got) != tt.want {
			t.Errorf("Body(%v) = %s, %v\nwant %s", tt.batch, got, err, tt.want)
		}
	}
}

// TestPurgeSendsExactRequest checks the wire: method, path, headers and body.
func TestPurgeSendsExactRequest(t *testing.T) {
	type seen struct{ method, path, auth, ua, ctype, body string }
	got := make(chan seen, 2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Method, r.URL.Path, r.Header.Get("Authorization"), r.Header.Get("User-Agent"), r.Header.Get("Content-Type"), string(b)}
		io.WriteString(w, `{"success":true,"errors":[],"messages":[],"result":{"id":"abc"}}`)
	}))
	defer srv.Close()
	c, err := purge.NewClient(purge.ClientConfig{BaseURL: srv.URL + "/client/v4/", Token: token, UserAgent: "purgeq-test/1"})
	if err != nil {
		t.Fatal(err)
	}
	acc, err := c.Purge(context.Background(), zone, purge.Batch{Kind: purge.Files, Items: []string{"https://x.example/?a=1&b=2"}})
	if err != nil || acc.ID != "abc" {
		t.Fatalf("Purge = %+v, %v", acc, err)
	}
	want := seen{"POST", "/client/v4/zones/" + zone + "/purge_cache", "Bearer " + token, "purgeq-test/1", "application/json", `{"files":["https://x.example/?a=1&b=2"]}`}
	if s := <-got; s != want {
		t.Errorf("request = %+v\nwant      %+v", s, want)
	}
	if _, err := c.Purge(context.Background(), zone, purge.Batch{Kind: purge.Tags, Items: []string{"t"}, Soft: true}); err != nil {
		t.Fatal(err)
	}
	if s := <-got; s.path != "/client/v4/zones/"+zone+"/invalidate_cache" {
		t.Errorf("soft purge went to %s", s.path)
	}
}

// TestClassify maps every status class, code and header to its outcome.
func TestClassify(t *testing.T) {
	files := purge.Batch{Kind: purge.Files, Items: []string{"https://a.example/ok", "https://a.example/bad"}}
	tags := purge.Batch{Kind: purge.Tags, Items: []string{"t1"}}
	env := func(code int, msg string) string {
		return `{"success":false,"errors":[{"code":` + itoa(code) + `,"message":"` + msg + `"}],"messages":[],"result":null}`
	}
	withHeaders, err := purge.NormalizeFile(purge.File{URL: "https://a.example/blog/x", Headers: map[string]string{"CF-IPCountry": "ES"}})
	if err != nil {
		t.Fatal(err)
	}
	blog := purge.Batch{Kind: purge.Files, Items: []string{"https://a.example/", "https://a.example/blog", "https://a.example/BLOG/X", "https://a.example/blog/x"}}
	query := purge.Batch{Kind: purge.Files, Items: []string{"https://a.example/s?q=1&p=2", "https://a.example/s", "https://a.example/s?q=1"}}
	words := purge.Batch{Kind: purge.Tags, Items: []string{"purge", "any", "urls", "unable"}}
	products := purge.Batch{Kind: purge.Tags, Items: []string{"product-1", "product-10"}}
	prefixes := purge.Batch{Kind: purge.Prefixes, Items: []string{"a.example/blog/", "a.example/blog", "a.example/"}}
	hosts := purge.Batch{Kind: purge.Hosts, Items: []string{"a.example", "www.a.example"}}
	h := func(kv ...string) http.Header {
		out := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			out.Set(kv[i], kv[i+1])
		}
		return out
	}
	tests := []struct {
		name       string
		status     int
		header     http.Header
		body       string
		batch      purge.Batch
		class      purge.Class // 0: accepted
		scope      purge.Scope
		retryAfter time.Duration
		code       int
		items      []string
	}{
		{"accepted", 200, nil, `{"success":true,"errors":[],"messages":[],"result":{"id":"x"}}`, files, 0, "", 0, 0, nil},
		{"global 971 with Retry-After", 429, h("Retry-After", "300"), env(971, "Please wait"), files, purge.RateLimited, purge.ScopeGlobal, 300 * time.Second, 971, nil},
		{"global 10100", 429, nil, env(10100, "More than 1200 requests per 300 seconds reached"), tags, purge.RateLimited, purge.ScopeGlobal, 0, 10100, nil},
		{"purge bucket on tags", 429, h("Retry-After", "12"), env(1134, "rate limit reached"), tags, purge.RateLimited, purge.ScopeFlex, 12 * time.Second, 1134, nil},
		{"purge bucket on files, Ratelimit header", 429, h("Ratelimit", `"default";r=0;t=7`), env(1134, "rate limit reached"), files, purge.RateLimited, purge.ScopeURL, 7 * time.Second, 1134, nil},
		{"bare 429 is global", 429, nil, `rate limited`, tags, purge.RateLimited, purge.ScopeGlobal, 0, 0, nil},
		{"fractional Retry-After", 429, h("Retry-After", "1.5"), env(971, ""), tags, purge.RateLimited, purge.ScopeGlobal, 1500 * time.Millisecond, 971, nil},
		{"500", 500, nil, `oops`, files, purge.Transient, "", 0, 0, nil},
		{"502 envelope", 502, nil, env(0, "bad gateway"), files, purge.Transient, "", 0, 0, nil},
		{"503", 503, nil, ``, files, purge.Transient, "", 0, 0, nil},
		{"truncated 200", 200, nil, `{"success":true,"result":{"id":"`, files, purge.Transient, "", 0, 0, nil},
		{"HTML 200", 200, nil, `<html>`, files, purge.Transient, "", 0, 0, nil},
		{"200 not success no errors", 200, nil, `{"success":false,"errors":[]}`, files, purge.Transient, "", 0, 0, nil},
		{"408", 408, nil, env(0, "timeout"), files, purge.Transient, "", 0, 0, nil},
		{"auth 10000", 403, nil, env(10000, "Authentication error"), files, purge.Misconfigured, "", 0, 10000, nil},
		{"401 without code", 401, nil, `{"success":false,"errors":[]}`, files, purge.Misconfigured, "", 0, 0, nil},
		{"bad zone 7003", 404, nil, env(7003, "Could not route"), files, purge.Misconfigured, "", 0, 7003, nil},
		{"no route 7000", 404, nil, env(7000, "No route for that URI"), files, purge.Misconfigured, "", 0, 7000, nil},
		{"1015 names the url", 400, nil, env(1015, "Unable to purge https://a.example/bad"), files, purge.Permanent, "", 0, 1015, []string{"https://a.example/bad"}},
		{"1016 names none", 400, nil, env(1016, "Unable to purge any urls"), files, purge.Permanent, "", 0, 1016, nil},
		{"1092", 400, nil, env(1092, "purge_everything mixed"), files, purge.Permanent, "", 0, 1092, nil},
		{"1094 too many files", 400, nil, env(1094, "too many"), files, purge.Permanent, "", 0, 1094, nil},
		{"1100 tag too long names it", 400, nil, env(1100, "tag t1 is too long"), tags, purge.Permanent, "", 0, 1100, []string{"t1"}},
		{"1114", 400, nil, env(1114, "host too long"), purge.Batch{Kind: purge.Hosts, Items: []string{"h.example"}}, purge.Permanent, "", 0, 1114, nil},
		{"400 with non-JSON body", 400, nil, `bad request`, files, purge.Transient, "", 0, 0, nil},

		// A redirect is never followed: the base URL is wrong.
		{"301 to https", 301, h("Location", "https://api.example/client/v4/zones/z/purge_cache"), `<html>Moved</html>`, files, purge.Misconfigured, "", 0, 0, nil},
		{"302 without Location", 302, nil, ``, tags, purge.Misconfigured, "", 0, 0, nil},
		{"307 with an envelope", 307, nil, env(1015, "Unable to purge https://a.example/bad"), files, purge.Misconfigured, "", 0, 0, nil},
		{"308 with a rate-limit code", 308, nil, env(971, "Please wait"), tags, purge.Misconfigured, "", 0, 0, nil},

		// Only the item Cloudflare names, compared exactly, is at fault.
		{"1015 names only the exact url", 400, nil, env(1015, "Unable to purge https://a.example/blog/x"), blog, purge.Permanent, "", 0, 1015, []string{"https://a.example/blog/x"}},
		{"1015 names a url with headers", 400, nil, env(1015, "Unable to purge https://a.example/blog/x"), purge.Batch{Kind: purge.Files, Items: []string{"https://a.example/blog", withHeaders}}, purge.Permanent, "", 0, 1015, []string{withHeaders}},
		{"1015 url with query string", 400, nil, env(1015, "Unable to purge https://a.example/s?q=1&p=2"), query, purge.Permanent, "", 0, 1015, []string{"https://a.example/s?q=1&p=2"}},
		{"1015 path case differs", 400, nil, env(1015, "Unable to purge https://a.example/Blog/x"), blog, purge.Permanent, "", 0, 1015, nil},
		{"1015 host case differs", 400, nil, env(1015, "Unable to purge HTTPS://A.Example/blog/x"), blog, purge.Permanent, "", 0, 1015, []string{"https://a.example/blog/x"}},
		{"1015 trailing period", 400, nil, env(1015, "Unable to purge https://a.example/blog/x."), blog, purge.Permanent, "", 0, 1015, []string{"https://a.example/blog/x"}},
		{"1015 quoted url", 400, nil, env(1015, `Unable to purge 'https://a.example/s?q=1'.`), query, purge.Permanent, "", 0, 1015, []string{"https://a.example/s?q=1"}},
		{"1015 several errors", 400, nil, `{"success":false,"errors":[{"code":1015,"message":"Unable to purge https://a.example/"},{"code":1015,"message":"Unable to purge https://a.example/blog"}]}`, blog, purge.Permanent, "", 0, 1015, []string{"https://a.example/", "https://a.example/blog"}},
		{"1015 names no item", 400, nil, env(1015, "Unable to purge https://b.example/blog/x"), blog, purge.Permanent, "", 0, 1015, nil},
		{"1016 names no tag", 400, nil, env(1016, "Unable to purge any urls"), words, purge.Permanent, "", 0, 1016, nil},
		{"1015 names a tag that is a template word", 400, nil, env(1015, "Unable to purge purge"), words, purge.Permanent, "", 0, 1015, []string{"purge"}},
		{"tag named case-insensitively", 400, nil, env(1015, "Unable to purge Product-1"), products, purge.Permanent, "", 0, 1015, []string{"product-1"}},
		{"tag named as a whole token", 400, nil, env(1100, "tag product-1 is too long"), products, purge.Permanent, "", 0, 1100, []string{"product-1"}},
		{"prefix named exactly", 400, nil, env(1015, "Unable to purge prefix A.Example/blog/"), prefixes, purge.Permanent, "", 0, 1015, []string{"a.example/blog/"}},
		{"host named as a whole token", 400, nil, env(1115, "Invalid host: a.example"), hosts, purge.Permanent, "", 0, 1115, []string{"a.example"}},

		// A rate-limit code decides, whatever the status.
		{"971 with HTTP 400", 400, h("Retry-After", "300"), env(971, "Please wait and consider throttling your request speed"), files, purge.RateLimited, purge.ScopeGlobal, 300 * time.Second, 971, nil},
		{"10100 with HTTP 400", 400, nil, env(10100, "More than 1200 requests per 300 seconds reached"), files, purge.RateLimited, purge.ScopeGlobal, 0, 10100, nil},
		{"1134 with HTTP 400 on tags", 400, h("Retry-After", "5"), env(1134, "rate limit reached"), tags, purge.RateLimited, purge.ScopeFlex, 5 * time.Second, 1134, nil},
		{"1134 with HTTP 200 on files", 200, nil, env(1134, "rate limit reached"), files, purge.RateLimited, purge.ScopeURL, 0, 1134, nil},
		{"1134 with HTTP 503", 503, nil, env(1134, "rate limit reached"), tags, purge.RateLimited, purge.ScopeFlex, 0, 1134, nil},
		{"rate-limit code in a later error", 400, nil, `{"success":false,"errors":[{"code":1015,"message":"Unable to purge https://a.example/ok"},{"code":1134,"message":"rate limit reached"}]}`, files, purge.RateLimited, purge.ScopeURL, 0, 1134, nil},
		{"global beats bucket", 429, nil, `{"success":false,"errors":[{"code":1134,"message":"rate limit reached"},{"code":971,"message":"Please wait"}]}`, tags, purge.RateLimited, purge.ScopeGlobal, 0, 971, nil},
		{"429 with unknown code is global", 429, nil, env(1015, "Unable to purge https://a.example/bad"), files, purge.RateLimited, purge.ScopeGlobal, 0, 1015, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := purge.Classify(tt.status, tt.header, []byte(tt.body), tt.batch)
			if tt.class == 0 {
				if err != nil {
					t.Fatalf("err = %v, want accepted", err)
				}
				return
			}
			var pe *purge.Error
			if !errors.As(err, &pe) {
				t.Fatalf("err = %v, want *purge.Error", err)
			}
			if pe.Class != tt.class || pe.Scope != tt.scope || pe.RetryAfter != tt.retryAfter || pe.Code != tt.code || strings.Join(pe.Items, ",") != strings.Join(tt.items, ",") {
				t.Errorf("got class=%v scope=%q retry=%v code=%d items=%q\nwant class=%v scope=%q retry=%v code=%d items=%q",
					pe.Class, pe.Scope, pe.RetryAfter, pe.Code, pe.Items, tt.class, tt.scope, tt.retryAfter, tt.code, tt.items)
			}
		})
	}
}

// TestRedirectNotFollowed: a redirecting API is Misconfigured, with a
// message naming PURGE_CLOUDFLARE_API_URL and where it pointed, and the
// request (with its token) never reaches the redirect's target.
func TestRedirectNotFollowed(t *testing.T) {
	reached := make(chan string, 10)
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached <- r.Header.Get("Authorization")
		io.WriteString(w, `{"success":true,"errors":[],"messages":[],"result":{"id":"stolen"}}`)
	}))
	defer target.Close()
	for _, status := range []int{301, 302, 303, 307, 308} {
		redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, target.URL+r.URL.Path, status)
		}))
		c, err := purge.NewClient(purge.ClientConfig{BaseURL: redirector.URL, Token: token})
		if err != nil {
			t.Fatal(err)
		}
		acc, err := c.Purge(context.Background(), zone, purge.Batch{Kind: purge.Tags, Items: []string{"t"}})
		redirector.Close()
		var pe *purge.Error
		if !errors.As(err, &pe) || pe.Class != purge.Misconfigured || pe.Status != status || acc.ID != "" {
			t.Errorf("%d: %+v, %v; want Misconfigured", status, acc, err)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, "PURGE_CLOUDFLARE_API_URL") || !strings.Contains(msg, target.URL) ||
			strings.Contains(msg, zone) || strings.Contains(msg, token) {
			t.Errorf("%d: message %q: want PURGE_CLOUDFLARE_API_URL and %s, neither the zone nor the token", status, msg, target.URL)
		}
	}
	select {
	case auth := <-reached:
		t.Errorf("a redirect was followed (Authorization %q reached the target)", auth)
	default:
	}
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}

// TestOutcomesAgainstSimulator drives every outcome class through a real
// HTTP round trip and checks that the token never reaches an error message.
func TestOutcomesAgainstSimulator(t *testing.T) {
	sim := cftest.NewServer(cftest.Config{Token: token, Zones: []string{zone}, GlobalLimit: rate.Per(1000, time.Minute), Block: time.Second})
	defer sim.Close()
	client := func(tok string, timeout time.Duration) *purge.Client {
		c, err := purge.NewClient(purge.ClientConfig{BaseURL: sim.URL, Token: tok, Timeout: timeout})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	c := client(token, 500*time.Millisecond)
	ctx := context.Background()
	urls := purge.Batch{Kind: purge.Files, Items: []string{"https://a.example/1", "https://a.example/2"}}
	tags := purge.Batch{Kind: purge.Tags, Items: []string{"t"}}
	var errs []error
	expect := func(name string, err error, class purge.Class, check func(*purge.Error) bool) {
		t.Helper()
		errs = append(errs, err)
		var pe *purge.Error
		if !errors.As(err, &pe) || pe.Class != class || (check != nil && !check(pe)) {
			t.Errorf("%s: err = %#v, want class %v", name, err, class)
		}
	}

	if acc, err := c.Purge(ctx, zone, urls); err != nil || len(acc.ID) != 32 {
		t.Fatalf("accepted: %+v, %v", acc, err)
	}
	_, err := client("wrong", time.Second).Purge(ctx, zone, urls)
	expect("bad token", err, purge.Misconfigured, func(e *purge.Error) bool { return e.Code == purge.CodeAuth })
	_, err = c.Purge(ctx, "nosuchzone", urls)
	expect("bad zone", err, purge.Misconfigured, func(e *purge.Error) bool { return e.Code == purge.CodeNoRoute })

	sim.Poison("https://a.example/2")
	_, err = c.Purge(ctx, zone, urls)
	expect("poison", err, purge.Permanent, func(e *purge.Error) bool {
		return e.Code == purge.CodeUnableToPurge && len(e.Items) == 1 && e.Items[0] == "https://a.example/2"
	})

	for _, f := range []cftest.Faults{{Error5xx: 1}, {Hang: 1}, {Reset: 1}, {Malformed: 1}} {
		sim.SetFaults(f, 1)
		_, err = c.Purge(ctx, zone, tags)
		expect("fault", err, purge.Transient, nil)
	}
	sim.SetFaults(cftest.Faults{}, 1)

	sim.Force429(purge.ScopeFlex, 1)
	_, err = c.Purge(ctx, zone, tags)
	expect("forced 1134", err, purge.RateLimited, func(e *purge.Error) bool { return e.Scope == purge.ScopeFlex && e.RetryAfter > 0 })
	sim.Force429(purge.ScopeGlobal, 1)
	_, err = c.Purge(ctx, zone, tags)
	expect("forced global", err, purge.RateLimited, func(e *purge.Error) bool { return e.Scope == purge.ScopeGlobal && e.RetryAfter == time.Second })
	_, err = c.Purge(ctx, zone, tags)
	expect("during block", err, purge.RateLimited, func(e *purge.Error) bool { return e.Scope == purge.ScopeGlobal })
	if st := sim.Stats(); st.DuringBlock != 1 {
		t.Errorf("DuringBlock = %d, want 1", st.DuringBlock)
	}

	for _, err := range errs {
		if err != nil && strings.Contains(err.Error(), token) {
			t.Errorf("error leaks the token: %v", err)
		}
	}
}
