package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/purgeq/purgeq/batching"
	"github.com/purgeq/purgeq/internal/config"
	"github.com/purgeq/purgeq/internal/testredis"
	"github.com/purgeq/purgeq/internal/worker/workertest"
	"github.com/purgeq/purgeq/limits/rate"
	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/purge/cftest"
	"github.com/purgeq/purgeq/tasks"
)

var srv *testredis.Server

func TestMain(m *testing.M) { testredis.Main(m, &srv) }

const zones = "example.com=zone-com,example.org=zone-org"

func setup(t testing.TB) *redis.Client {
	t.Helper()
	rdb := testredis.Connect(t)
	testredis.Flush(t, rdb)
	t.Setenv("PURGE_REDIS_URL", srv.URL())
	t.Setenv("PURGE_ZONES", zones)
	return rdb
}

type result struct {
	code           int
	stdout, stderr string
}

func enqueueCmd(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, strings.NewReader(stdin), &out, &errb)
	return result{code, out.String(), errb.String()}
}

func pending(t *testing.T, rdb *redis.Client) int {
	t.Helper()
	info, err := asynq.NewInspectorFromRedisClient(rdb).GetQueueInfo(tasks.QueueRequests)
	if err != nil {
		return 0 // the queue does not exist: nothing was ever queued
	}
	return info.Pending
}

func TestQueuesAndPrintsID(t *testing.T) {
	rdb := setup(t)
	r := enqueueCmd(t, "", "https://example.com/a", "--tag", "product-1", "--zone", "example.com", "--url", "https://www.example.com/b")
	if r.code != 0 || len(strings.TrimSpace(r.stdout)) != 24 || !strings.Contains(r.stderr, "queued 3 item(s)") {
		t.Fatalf("got %+v", r)
	}
	// Cloudflare would accept an item of another zone and purge nothing.
	for _, args := range [][]string{{"https://example.org/b"}, {"--host", "example.org"}, {"--prefix", "example.org/p"}} {
		out := enqueueCmd(t, "", append([]string{"--zone", "example.com"}, args...)...)
		if out.code != 2 || !strings.Contains(out.stderr, "example.org") || !strings.Contains(out.stderr, "not in zone example.com") {
			t.Errorf("%v outside the named zone: %+v", args, out)
		}
	}
	if n := pending(t, rdb); n != 1 {
		t.Errorf("%d requests pending, want 1", n)
	}
	r = enqueueCmd(t, "", "--json", "--idempotency-key", "deploy-1", "https://example.com/a")
	var out map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &out); r.code != 0 || err != nil || out["items"] != 1.0 {
		t.Fatalf("json: %+v, %v", r, err)
	}
	again := enqueueCmd(t, "", "--json", "--idempotency-key", "deploy-1", "https://example.com/a")
	if again.code != 0 || !strings.Contains(again.stdout, `"duplicate":true`) || !strings.Contains(again.stdout, out["id"].(string)) {
		t.Errorf("repeated key: %+v", again)
	}
}

func TestInvalidInputQueuesNothing(t *testing.T) {
	rdb := setup(t)
	for _, tt := range []struct {
		args []string
		want []string
	}{
		{[]string{"https://example.com/ok", "not-a-url", "ftp://example.com/x", "--tag", "two words"}, []string{`"not-a-url": not an absolute URL`, `"ftp://example.com/x"`, `"two words"`, "3 invalid item(s), nothing queued"}},
		{[]string{"https://unknown.net/x"}, []string{"no configured zone matches host"}},
		{[]string{"--tag", "t"}, []string{"tags need a zone"}},
		{[]string{"--zone", "nope.com", "--tag", "t"}, []string{"nope.com", "not one of PURGE_ZONES"}},
		{[]string{}, []string{"nothing to purge"}},
		{[]string{"--kind", "cookies", "--from", "-"}, []string{"--kind"}},
		{[]string{"--bogus"}, []string{"flag provided but not defined"}},
	} {
		r := enqueueCmd(t, "", tt.args...)
		if r.code != 2 || r.stdout != "" {
			t.Errorf("%v: exit %d, stdout %q; want 2 and nothing", tt.args, r.code, r.stdout)
		}
		for _, w := range tt.want {
			if !strings.Contains(r.stderr, w) {
				t.Errorf("%v: stderr lacks %q:\n%s", tt.args, w, r.stderr)
			}
		}
	}
	if n := pending(t, rdb); n != 0 {
		t.Errorf("%d requests queued by invalid input", n)
	}
}

func TestFromFileNamesBadLines(t *testing.T) {
	rdb := setup(t)
	f := filepath.Join(t.TempDir(), "urls.txt")
	os.WriteFile(f, []byte("# changed by deploy\nhttps://example.com/1\n\nexample.com/2\nhttps://example.com/3\nhttps://example.com/a b\n"), 0o644)
	r := enqueueCmd(t, "", "--from", f)
	if r.code != 2 || !strings.Contains(r.stderr, "urls.txt:4:") || !strings.Contains(r.stderr, "urls.txt:6:") || strings.Contains(r.stderr, ":2:") {
		t.Errorf("got %+v", r)
	}
	r = enqueueCmd(t, "www.example.org/blog/\nexample.com/x/\n", "--from", "-", "--kind", "prefixes")
	if r.code != 0 || !strings.Contains(r.stderr, "queued 2") {
		t.Errorf("stdin prefixes: %+v", r)
	}
	if n := pending(t, rdb); n != 1 {
		t.Errorf("%d pending, want 1", n)
	}
}

func TestRedisDown(t *testing.T) {
	setup(t)
	t.Setenv("PURGE_REDIS_URL", "redis://127.0.0.1:1/0")
	r := enqueueCmd(t, "", "https://example.com/a")
	if r.code != 1 || r.stdout != "" || !strings.Contains(r.stderr, "unreachable") || !strings.Contains(r.stderr, "nothing was queued") {
		t.Errorf("got %+v", r)
	}
}

// TestWaitAndDeadLetters runs a worker against the simulator: --wait exits
// 0 once purged, 1 when an item is dead-lettered; dlq list, retry and drop
// act on the entries.
func TestWaitAndDeadLetters(t *testing.T) {
	setup(t)
	sim := cftest.NewServer(cftest.Config{Token: "tok", Zones: []string{"zone-com", "zone-org"}, GlobalLimit: rate.Per(1000, time.Second)})
	defer sim.Close()
	t.Setenv("PURGE_BATCH_WAIT", "100ms")
	startWorker(t, sim)

	ok := enqueueCmd(t, "", "--wait", "--timeout", "20s", "https://example.com/ok")
	if ok.code != 0 || !strings.Contains(ok.stderr, "1/1 purged") {
		t.Fatalf("--wait: %+v", ok)
	}
	if r := enqueueCmd(t, "", "status", strings.TrimSpace(ok.stdout)); r.code != 0 || !strings.Contains(r.stdout, `"state":"done"`) {
		t.Errorf("status: %+v", r)
	}
	if r := enqueueCmd(t, "", "status", "nope"); r.code != 1 || !strings.Contains(r.stderr, "no request nope") {
		t.Errorf("status of an unknown id: %+v", r)
	}
	sim.Poison("https://example.com/bad")
	r := enqueueCmd(t, "", "--wait", "--json", "--timeout", "20s", "https://example.com/bad", "https://example.com/good")
	if r.code != 1 || !strings.Contains(r.stderr, "1 item(s) dead-lettered") || !strings.Contains(r.stderr, "https://example.com/bad (d") || !strings.Contains(r.stdout, `"dead":1`) {
		t.Fatalf("--wait with a poison item: %+v", r)
	}
	r = enqueueCmd(t, "", "dlq", "list", "--json")
	var entries []batching.DeadEntry
	if err := json.Unmarshal([]byte(r.stdout), &entries); err != nil || len(entries) != 1 || entries[0].Item != "https://example.com/bad" || entries[0].Code != purge.CodeUnableToPurge {
		t.Fatalf("dlq list: %+v, %v", r, err)
	}
	if r := enqueueCmd(t, "", "dlq", "list", "--zone", "example.org"); r.code != 0 || strings.Contains(r.stdout, "example.com/bad") {
		t.Errorf("dlq list --zone: %+v", r)
	}
	if r := enqueueCmd(t, "", "dlq", "list"); !strings.Contains(r.stdout, "example.com") || !strings.Contains(r.stdout, "Unable to purge") {
		t.Errorf("dlq list table: %+v", r)
	}
	if r := enqueueCmd(t, "", "dlq", "retry"); r.code != 2 {
		t.Errorf("dlq retry without ids: %+v", r)
	}
	sim.ClearPoison()
	if r := enqueueCmd(t, "", "dlq", "retry", entries[0].ID); r.code != 0 || !strings.Contains(r.stderr, "1 entry retried") {
		t.Fatalf("dlq retry: %+v", r)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		purged := 0
		for _, c := range sim.Calls() {
			for _, it := range c.Items {
				if it == "https://example.com/bad" && c.Accepted() {
					purged++
				}
			}
		}
		if purged == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the retried entry was not purged")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if r := enqueueCmd(t, "", "dlq", "drop", "--all"); r.code != 0 || !strings.Contains(r.stderr, "0 entries dropped") {
		t.Errorf("dlq drop --all on an empty queue: %+v", r)
	}
}

func TestProgressBar(t *testing.T) {
	var b bytes.Buffer
	p := &progress{w: &b, terminal: true, start: time.Now().Add(-2 * time.Second),
		cooldown: func() map[string]time.Duration { return map[string]time.Duration{"global": 252 * time.Second} }}
	p.show(batching.Status{Total: 200, Purged: 100})
	p.end()
	got := b.String()
	for _, want := range []string{"\r\033[K[###############---------------] 100/200 purged", "global cooldown 4m12s", "50/s", "\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("bar %q lacks %q", got, want)
		}
	}
}

// startWorker runs a worker against sim in this process until the test ends.
func startWorker(t *testing.T, sim *cftest.Server) *config.Config {
	t.Helper()
	t.Setenv("PURGE_CLOUDFLARE_API_URL", sim.URL)
	t.Setenv("PURGE_CLOUDFLARE_API_TOKEN", "tok")
	t.Setenv("PURGE_HTTP_ADDR", "127.0.0.1:0")
	cfg, _ := workertest.Start(t, zerolog.Nop())
	return cfg
}
