package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cloudflare/cloudflare-go/v6"
	"github.com/cloudflare/cloudflare-go/v6/cache"
	"github.com/cloudflare/cloudflare-go/v6/option"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/purgeq/purgeq/internal/testwait"
	"github.com/purgeq/purgeq/tasks"
)

const intakeToken = "intake-secret"

// startIntake runs `enqueue serve` in this process until the test ends.
func startIntake(t testing.TB) string {
	t.Helper()
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	t.Setenv("PURGE_INTAKE_ADDR", addr)
	t.Setenv("PURGE_INTAKE_TOKENS", "other-token,"+intakeToken)
	t.Setenv("PURGE_LOG_LEVEL", "warn")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	var errb bytes.Buffer
	go func() { done <- run(ctx, []string{"serve"}, nil, io.Discard, &errb) }()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("serve exited %d: %s", code, errb.String())
		}
	})
	base := "http://" + addr
	testwait.For(t, 5*time.Second, "the intake", func() bool {
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	})
	return base
}

func call(t *testing.T, method, url, token, body string, header ...string) (int, map[string]any, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out, resp.Header
}

func TestIntake(t *testing.T) {
	rdb := setup(t)
	base := startIntake(t)

	if code, _, _ := call(t, "POST", base+"/v1/purge", "", `{"files":["https://example.com/a"]}`); code != 401 {
		t.Errorf("no token: %d", code)
	}
	if code, _, _ := call(t, "POST", base+"/v1/purge", "wrong", `{"files":["https://example.com/a"]}`); code != 401 {
		t.Errorf("wrong token: %d", code)
	}
	code, out, h := call(t, "POST", base+"/v1/purge", intakeToken,
		`{"files":["https://example.com/a?x=1&y=2",{"url":"https://example.com/m","headers":{"CF-Device-Type":"mobile"}}],"tags":["T1"],"hosts":["www.example.com"],"prefixes":["example.com/blog/"],"zone":"example.com","source":"cms post 4711"}`)
	if code != 202 || out["items"] != 5.0 || h.Get("X-Request-Id") == "" {
		t.Fatalf("accepted: %d %v", code, out)
	}
	id := out["id"].(string)
	if code, bad, _ := call(t, "POST", base+"/v1/purge", intakeToken, `{"zone":"example.com","hosts":["www.example.org"]}`); code != 400 || !strings.Contains(fmt.Sprint(bad["invalid"]), "www.example.org") {
		t.Errorf("a host outside the named zone: %d %v", code, bad)
	}
	code, st, _ := call(t, "GET", base+"/v1/purge/"+id, intakeToken, "")
	if code != 200 || st["state"] != "queued" || st["total"] != 5.0 || st["producer"] != "intake-2" || st["source"] != "cms post 4711" {
		t.Errorf("status: %d %v", code, st)
	}
	if code, _, _ := call(t, "GET", base+"/v1/purge/nope", intakeToken, ""); code != 404 {
		t.Errorf("unknown id: %d", code)
	}

	// Every bad item is named and nothing is queued.
	code, out, _ = call(t, "POST", base+"/v1/purge", intakeToken, `{"files":["https://example.com/ok","nope",42],"tags":["bad tag"]}`)
	inv, _ := out["invalid"].([]any)
	if code != 400 || len(inv) != 3 {
		t.Errorf("bad items: %d %v", code, out)
	}
	for _, body := range []string{`{"files":`, `{"filez":["https://example.com/a"]}`, `{"files":["https://example.com/a"]} {}`, `{"purge_everything":false}`} {
		if code, out, _ := call(t, "POST", base+"/v1/purge", intakeToken, body); code != 400 || out["error"] == "" {
			t.Errorf("%s: %d %v", body, code, out)
		}
	}
	big := `{"files":["https://example.com/` + strings.Repeat("a", 11<<20) + `"]}`
	if code, _, _ := call(t, "POST", base+"/v1/purge", intakeToken, big); code != 413 {
		t.Errorf("oversized body: %d", code)
	}
	if n := pending(t, rdb); n != 1 {
		t.Errorf("%d requests queued, want only the first", n)
	}

	// Idempotency keys.
	_, first, _ := call(t, "POST", base+"/v1/purge", intakeToken, `{"tags":["x"],"zone":"example.org","idempotency_key":"cms-42"}`)
	_, again, _ := call(t, "POST", base+"/v1/purge", intakeToken, `{"tags":["x"],"zone":"example.org","idempotency_key":"cms-42"}`)
	if first["id"] != again["id"] || again["duplicate"] != true {
		t.Errorf("idempotency: %v then %v", first, again)
	}
}

// TestIntakeCloudflareCompatible drives the intake with Cloudflare's own Go
// SDK, changed only in its base URL and token.
func TestIntakeCloudflareCompatible(t *testing.T) {
	rdb := setup(t)
	base := startIntake(t)
	cf := cloudflare.NewClient(option.WithBaseURL(base+"/client/v4/"), option.WithAPIToken(intakeToken), option.WithMaxRetries(0))
	ctx := context.Background()
	var apiErr400 *cloudflare.Error

	res, err := cf.Cache.Purge(ctx, cache.CachePurgeParams{ZoneID: cloudflare.F("zone-com"),
		Body: cache.CachePurgeParamsBodyCachePurgeSingleFile{Files: cloudflare.F([]string{"https://example.com/a.css?v=1&x=2"})}})
	if err != nil || res.ID == "" {
		t.Fatalf("files purge: %v, %v", res, err)
	}
	if _, err := cf.Cache.Purge(ctx, cache.CachePurgeParams{ZoneID: cloudflare.F("zone-com"),
		Body: cache.CachePurgeParamsBodyCachePurgeSingleFile{Files: cloudflare.F([]string{"https://example.org/x"})}}); !asError(err, &apiErr400) || apiErr400.StatusCode != 400 {
		t.Errorf("a URL of another zone posted to zone-com: %v", err)
	}
	payload := queuedPayload(t, rdb, res.ID)
	if !strings.Contains(payload, `"files":["https://example.com/a.css?v=1&x=2"]`) {
		t.Errorf("queued payload %s", payload)
	}
	if _, err := cf.Cache.Purge(ctx, cache.CachePurgeParams{ZoneID: cloudflare.F("zone-org"),
		Body: cache.CachePurgeParamsBodyCachePurgeFlexPurgeByTags{Tags: cloudflare.F([]string{"product-1"})}}); err != nil {
		t.Errorf("tags purge: %v", err)
	}
	if _, err := cf.Cache.Purge(ctx, cache.CachePurgeParams{ZoneID: cloudflare.F("zone-org"),
		Body: cache.CachePurgeParamsBodyCachePurgeEverything{PurgeEverything: cloudflare.F(true)}}); err != nil {
		t.Errorf("purge everything: %v", err)
	}
	_, err = cf.Cache.Purge(ctx, cache.CachePurgeParams{ZoneID: cloudflare.F("not-a-zone"),
		Body: cache.CachePurgeParamsBodyCachePurgeFlexPurgeByTags{Tags: cloudflare.F([]string{"x"})}})
	var apiErr *cloudflare.Error
	if !asError(err, &apiErr) || apiErr.StatusCode != 404 || !strings.Contains(err.Error(), "7003") {
		t.Errorf("unknown zone: %v", err)
	}
	bad := cloudflare.NewClient(option.WithBaseURL(base+"/client/v4/"), option.WithAPIToken("cloudflare-token"), option.WithMaxRetries(0))
	if _, err := bad.Cache.Purge(ctx, cache.CachePurgeParams{ZoneID: cloudflare.F("zone-com"),
		Body: cache.CachePurgeParamsBodyCachePurgeFlexPurgeByTags{Tags: cloudflare.F([]string{"x"})}}); !asError(err, &apiErr) || apiErr.StatusCode != 401 {
		t.Errorf("wrong token: %v", err)
	}

	// Old clients: DELETE, and invalidate_cache for soft purges.
	code, env, _ := call(t, "DELETE", base+"/client/v4/zones/zone-com/purge_cache", intakeToken, `{"files":["https://example.com/wp"]}`)
	if code != 200 || env["success"] != true {
		t.Errorf("DELETE: %d %v", code, env)
	}
	code, env, _ = call(t, "POST", base+"/client/v4/zones/zone-com/invalidate_cache", intakeToken, `{"prefixes":["example.com/blog/"]}`)
	if code != 200 || !strings.Contains(queuedPayload(t, rdb, env["result"].(map[string]any)["id"].(string)), `"soft":true`) {
		t.Errorf("invalidate_cache: %d %v", code, env)
	}
	code, env, _ = call(t, "POST", base+"/client/v4/zones/zone-com/purge_cache", intakeToken, `{"purge_everything":true,"files":["https://example.com/x"]}`)
	if errs, _ := env["errors"].([]any); code != 400 || env["success"] != false || len(errs) != 1 || errs[0].(map[string]any)["code"] != 1092.0 {
		t.Errorf("mixed purge_everything: %d %v", code, env)
	}
	code, env, _ = call(t, "POST", base+"/client/v4/zones/zone-com/purge_cache", intakeToken, `{"files":["not a url"]}`)
	if errs, _ := env["errors"].([]any); code != 400 || len(errs) != 1 || errs[0].(map[string]any)["code"] != 1015.0 {
		t.Errorf("bad URL: %d %v", code, env)
	}
}

func asError(err error, target **cloudflare.Error) bool {
	e, ok := err.(*cloudflare.Error)
	if ok {
		*target = e
	}
	return ok
}

func queuedPayload(t *testing.T, rdb *redis.Client, id string) string {
	t.Helper()
	info, err := asynq.NewInspectorFromRedisClient(rdb).GetTaskInfo(tasks.QueueRequests, id)
	if err != nil {
		t.Fatalf("request %s is not queued: %v", id, err)
	}
	return string(info.Payload)
}

// TestIntakeRedisDown: 503, and nothing queued.
func TestIntakeRedisDown(t *testing.T) {
	setup(t)
	t.Setenv("PURGE_REDIS_URL", "redis://127.0.0.1:1/0")
	base := startIntake(t)
	code, out, _ := call(t, "POST", base+"/v1/purge", intakeToken, `{"files":["https://example.com/a"]}`)
	// Redis never answered, so the intake cannot know whether the write
	// went out before the connection failed: 503, and retry.
	if msg, _ := out["error"].(string); code != 503 || !strings.Contains(msg, "queued") || !strings.Contains(msg, "retry") {
		t.Errorf("got %d %v", code, out)
	}
}

// callWith is call with the intake's token and extra request headers (name, value, …).
func callWith(t *testing.T, method, url, body string, header ...string) (int, map[string]any) {
	t.Helper()
	code, out, _ := call(t, method, url, intakeToken, body, header...)
	return code, out
}

// TestIntakePurgeEverythingFalse: CONTRACT's example body, with
// "purge_everything":false, is accepted and purges only what it names.
func TestIntakePurgeEverythingFalse(t *testing.T) {
	rdb := setup(t)
	base := startIntake(t)
	code, out := callWith(t, "POST", base+"/v1/purge",
		`{"zone":"example.com","files":["https://example.com/a"],"tags":["t1"],"hosts":[],"prefixes":[],"purge_everything":false,"idempotency_key":"deploy-1","soft":false}`)
	if code != 202 || out["items"] != 2.0 {
		t.Fatalf("contract example body: %d %v", code, out)
	}
	if payload := queuedPayload(t, rdb, out["id"].(string)); strings.Contains(payload, `"everything"`) || strings.Contains(payload, `["*"]`) {
		t.Errorf("purge_everything false queued a purge-everything: %s", payload)
	}
	code, out = callWith(t, "POST", base+"/v1/purge", `{"zone":"example.org","purge_everything":true}`)
	if code != 202 || out["items"] != 1.0 || !strings.Contains(queuedPayload(t, rdb, out["id"].(string)), `["*"]`) {
		t.Errorf("purge_everything true: %d %v", code, out)
	}
}

// TestIntakeIdempotencyKeyHeader: the 503 answer says to retry with the
// same Idempotency-Key, so the header is a key like the body's field.
func TestIntakeIdempotencyKeyHeader(t *testing.T) {
	rdb := setup(t)
	base := startIntake(t)
	code, first := callWith(t, "POST", base+"/v1/purge", `{"tags":["x"],"zone":"example.org"}`, "Idempotency-Key", "cms-7")
	if code != 202 || first["duplicate"] == true {
		t.Fatalf("header key: %d %v", code, first)
	}
	code, again := callWith(t, "POST", base+"/v1/purge", `{"tags":["x"],"zone":"example.org","idempotency_key":"cms-7"}`)
	if code != 202 || again["id"] != first["id"] || again["duplicate"] != true {
		t.Errorf("same key in the body: %d %v then %v", code, first, again)
	}
	code, both := callWith(t, "POST", base+"/v1/purge", `{"tags":["x"],"zone":"example.org","idempotency_key":"cms-7"}`, "Idempotency-Key", "cms-7")
	if code != 202 || both["id"] != first["id"] || both["duplicate"] != true {
		t.Errorf("same key in both: %d %v", code, both)
	}
	code, out := callWith(t, "POST", base+"/v1/purge", `{"tags":["y"],"zone":"example.org","idempotency_key":"cms-8"}`, "Idempotency-Key", "cms-9")
	if msg, _ := out["error"].(string); code != 400 || !strings.Contains(msg, "Idempotency-Key") || !strings.Contains(msg, "idempotency_key") {
		t.Errorf("different keys: %d %v", code, out)
	}
	if n := pending(t, rdb); n != 1 {
		t.Errorf("%d requests queued, want 1", n)
	}
	code, env := callWith(t, "POST", base+"/client/v4/zones/zone-org/purge_cache", `{"tags":["x"]}`, "Idempotency-Key", "cms-7")
	if res, _ := env["result"].(map[string]any); code != 200 || res["id"] != first["id"] {
		t.Errorf("cloudflare route with the key: %d %v", code, env)
	}
}
