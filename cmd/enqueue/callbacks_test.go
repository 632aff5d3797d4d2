package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/purgeq/purgeq/internal/callback"
	"github.com/purgeq/purgeq/internal/testwait"
	"github.com/purgeq/purgeq/tasks"
)

const callbackSecret = "cli-callback-secret"

// queued counts request tasks waiting, due or delayed.
func queued(t *testing.T, rdb *redis.Client) int {
	t.Helper()
	info, err := asynq.NewInspectorFromRedisClient(rdb).GetQueueInfo(tasks.QueueRequests)
	if err != nil {
		return 0
	}
	return info.Pending + info.Scheduled
}

// TestCallbackAndTimingRefused: a callback that is not http(s), one the
// allow-list refuses, one without PURGE_CALLBACK_SECRET, and delays that
// are negative, over a day or unreadable are invalid input (exit 2
// naming what is wrong; intake 400), and nothing is queued.
func TestCallbackAndTimingRefused(t *testing.T) {
	rdb := setup(t)
	t.Setenv("PURGE_CALLBACK_ALLOW", "hooks.example.com")
	base := startIntake(t) // PURGE_CALLBACK_SECRET unset: refuses every callback
	if r := enqueueCmd(t, "", "--callback", "https://hooks.example.com/x", "https://example.com/a"); r.code != 2 || !strings.Contains(r.stderr, "PURGE_CALLBACK_SECRET") {
		t.Errorf("without a secret: %+v", r)
	}
	t.Setenv("PURGE_CALLBACK_SECRET", callbackSecret)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--callback", "ftp://hooks.example.com/x"}, `scheme "ftp" is not http or https`},
		{[]string{"--callback", "file:///etc/passwd"}, `scheme "file"`},
		{[]string{"--callback", "https://evil.example.net/x"}, `"https://evil.example.net/x": callback host "evil.example.net" is not in PURGE_CALLBACK_ALLOW`},
		{[]string{"--callback", "http://10.0.0.1/x"}, "PURGE_CALLBACK_ALLOW"},
		{[]string{"--delay", "-5s"}, "delay -5s is negative"},
		{[]string{"--delay", "25h"}, "delay 25h0m0s is over the bound of 24h0m0s"},
		{[]string{"--repeat-after", "48h"}, "repeat_after 48h0m0s is over the bound"},
		{[]string{"--delay", "soon"}, "invalid value"},
		{[]string{"--from", "-", "--delay", "-1s"}, "delay -1s is negative"},
		{[]string{"--from", "-", "--callback", "gopher://hooks.example.com/"}, `scheme "gopher"`},
	} {
		r := enqueueCmd(t, "https://example.com/f\n", append(tt.args, "https://example.com/a")...)
		if r.code != 2 || !strings.Contains(r.stderr, tt.want) {
			t.Errorf("%v: exit %d, want 2 naming %q:\n%s", tt.args, r.code, tt.want, r.stderr)
		}
	}
	for _, body := range []string{
		`{"files":["https://example.com/a"],"callback_url":"ftp://hooks.example.com/x"}`,
		`{"files":["https://example.com/a"],"callback_url":"https://evil.example.net/x"}`,
		`{"files":["https://example.com/a"],"delay":"-5s"}`,
		`{"files":["https://example.com/a"],"repeat_after":"tomorrow"}`,
	} {
		code, out, _ := call(t, "POST", base+"/v1/purge", intakeToken, body)
		if code != 400 || out["invalid"] == nil {
			t.Errorf("%s: %d %v, want 400 naming the item", body, code, out)
		}
	}
	if code, out, _ := call(t, "POST", base+"/v1/purge/stream?delay=-1s", intakeToken, "https://example.com/a\n"); code != 400 {
		t.Errorf("streamed, negative delay: %d %v", code, out)
	}
	if code, out, _ := call(t, "POST", base+"/v1/purge/stream?callback_url=ftp://hooks.example.com/", intakeToken, "https://example.com/a\n"); code != 400 || !strings.Contains(fmt.Sprint(out), "ftp") {
		t.Errorf("streamed, ftp callback: %d %v", code, out)
	}
	t.Setenv("PURGE_SERVER_TOKEN", intakeToken)
	if r := enqueueCmd(t, "", "--server", base, "--callback", "ftp://hooks.example.com/x", "https://example.com/a"); r.code != 2 || !strings.Contains(r.stderr, "ftp") {
		t.Errorf("through the intake: %+v", r)
	}
	if n := queued(t, rdb); n != 0 {
		t.Errorf("%d requests queued by invalid input", n)
	}
}

// TestCallbackAndTimingAccepted: accepted through every entry point; the
// status (CLI and intake) shows not_before and repeat_after; the
// Cloudflare-compatible endpoint takes them as headers, and refuses them
// as body fields (not Cloudflare's).
func TestCallbackAndTimingAccepted(t *testing.T) {
	rdb := setup(t)
	t.Setenv("PURGE_CALLBACK_SECRET", callbackSecret)
	base := startIntake(t)
	r := enqueueCmd(t, "", "--delay", "1h", "--repeat-after", "30m", "--callback", "https://hooks.example.com/x", "https://example.com/a")
	if r.code != 0 {
		t.Fatalf("%+v", r)
	}
	id := strings.TrimSpace(r.stdout)
	s := enqueueCmd(t, "", "status", id)
	if !strings.Contains(s.stdout, `"not_before":"`) || !strings.Contains(s.stdout, `"repeat_after":"30m0s"`) || strings.Contains(s.stdout, "hooks.example.com") {
		t.Errorf("status of a delayed request: %+v", s)
	}
	if !strings.Contains(queuedPayload(t, rdb, id), `"callback_url":"https://hooks.example.com/x"`) {
		t.Errorf("payload: %s", queuedPayload(t, rdb, id))
	}
	code, out, _ := call(t, "POST", base+"/v1/purge", intakeToken, `{"files":["https://example.com/b"],"delay":"1h","callback_url":"https://hooks.example.com/y"}`)
	if code != 202 {
		t.Fatalf("intake: %d %v", code, out)
	}
	if code, st, _ := call(t, "GET", base+"/v1/purge/"+out["id"].(string), intakeToken, ""); code != 200 || st["not_before"] == nil {
		t.Errorf("intake status: %d %v", code, st)
	}
	zone := base + "/client/v4/zones/zone-com/purge_cache"
	if code, out, _ := call(t, "POST", zone, intakeToken, `{"files":["https://example.com/c"],"delay":"1h"}`); code != 400 || !strings.Contains(fmt.Sprint(out), "X-Purgeq-Delay") {
		t.Errorf("Cloudflare-compatible, delay in the body: %d %v", code, out)
	}
	code, out, _ = call(t, "POST", zone, intakeToken, `{"files":["https://example.com/c"]}`, "X-Purgeq-Delay", "1h", "X-Purgeq-Callback-Url", "https://hooks.example.com/z")
	if code != 200 {
		t.Fatalf("Cloudflare-compatible with headers: %d %v", code, out)
	}
	if p := queuedPayload(t, rdb, out["result"].(map[string]any)["id"].(string)); !strings.Contains(p, `"not_before":`) || !strings.Contains(p, "hooks.example.com/z") {
		t.Errorf("payload: %s", p)
	}
	if code, out, _ := call(t, "POST", zone, intakeToken, `{"files":["https://example.com/d"]}`, "X-Purgeq-Callback-Url", "ftp://x/"); code != 400 {
		t.Errorf("Cloudflare-compatible, ftp callback: %d %v", code, out)
	}
}

// hook records signed callbacks.
type hook struct {
	*httptest.Server
	mu    sync.Mutex
	got   []callback.Body
	valid bool
}

func newHook(t *testing.T) *hook {
	h := &hook{valid: true}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		var b callback.Body
		json.Unmarshal(raw, &b)
		h.mu.Lock()
		h.got = append(h.got, b)
		h.valid = h.valid && callback.Verify([]byte(callbackSecret), raw, r.Header.Get(callback.SignatureHeader))
		h.mu.Unlock()
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *hook) bodies() ([]callback.Body, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]callback.Body(nil), h.got...), h.valid
}

// TestDeployTimingThroughIntake: a deploy's --from file streamed through
// the intake (--server) with --delay 2s, --repeat-after 2s and --callback:
// nothing reaches Cloudflare before the delay, the items go again at
// least 2s after the first calls, and the callback hears of both ends,
// signed.
func TestDeployTimingThroughIntake(t *testing.T) {
	setup(t)
	t.Setenv("PURGE_CALLBACK_SECRET", callbackSecret)
	sim := roomySim(t)
	base := startIntake(t)
	startWorker(t, sim)
	h := newHook(t)
	t.Setenv("PURGE_SERVER_TOKEN", intakeToken)
	var lines strings.Builder
	for i := range 150 {
		fmt.Fprintf(&lines, "https://example.com/deploy/%d\n", i)
	}
	file := filepath.Join(t.TempDir(), "deploy.txt")
	os.WriteFile(file, []byte(lines.String()), 0o644)
	start := time.Now()
	r := enqueueCmd(t, "", "--server", base, "--from", file, "--delay", "2s", "--repeat-after", "2s", "--callback", h.URL+"/done", "--wait")
	if r.code != 0 {
		t.Fatalf("%+v", r)
	}
	testwait.For(t, 20*time.Second, "callbacks of the request and its repeat", func() bool { b, _ := h.bodies(); return len(b) == 2 })
	bodies, valid := h.bodies()
	id := strings.TrimSpace(r.stdout)
	if !valid || bodies[0].ID != id || bodies[0].Repeat == nil || bodies[1].RepeatOf != id || bodies[1].Total != 150 || bodies[1].Purged != 150 {
		t.Errorf("callbacks (signatures valid %v): %+v", valid, bodies)
	}
	var first, second time.Time
	sent := map[string]int{}
	for _, c := range sim.Calls() {
		if !c.Accepted() {
			continue
		}
		for _, it := range c.Items {
			sent[it]++
			if sent[it] == 1 && (first.IsZero() || c.At.Before(first)) {
				first = c.At
			}
			if sent[it] == 2 && (second.IsZero() || c.At.Before(second)) {
				second = c.At
			}
		}
	}
	if len(sent) != 150 {
		t.Errorf("%d items sent, want 150", len(sent))
	}
	for it, n := range sent {
		if n != 2 {
			t.Errorf("%s sent %d times, want 2", it, n)
		}
	}
	if first.Sub(start) < 2*time.Second || second.Sub(first) < 2*time.Second {
		t.Errorf("first calls %v after the enqueue, repeats %v after them: want both at least 2s", first.Sub(start), second.Sub(first))
	}
	t.Logf("first calls %v after the enqueue (--delay 2s), the repeat's %v after them (--repeat-after 2s)",
		first.Sub(start).Round(time.Millisecond), second.Sub(first).Round(time.Millisecond))
}
