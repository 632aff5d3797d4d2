package worker_test

import (
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/purgeq/purgeq/internal/testwait"
	"github.com/purgeq/purgeq/purge/cftest"
	"github.com/purgeq/purgeq/tasks"
)

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func get(t *testing.T, url, user, pass string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metric reads one sample from a /metrics page (0 if absent).
func metric(page, series string) float64 {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(page)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// TestHTTPSide: health, the UI behind basic auth with its API, and
// metrics that move when purges happen.
func TestHTTPSide(t *testing.T) {
	addr := freeAddr(t)
	e := setup(t, cftest.Config{}, map[string]string{"PURGE_HTTP_ADDR": addr, "PURGE_UI_USER": "ops", "PURGE_UI_PASSWORD": "s3cret-ui", "PURGE_BATCH_WAIT": "100ms"})
	e.startWorker()
	base := "http://" + addr
	testwait.For(t, 5*time.Second, "the HTTP side", func() bool {
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	})
	if code, _ := get(t, base+"/readyz", "", ""); code != 200 {
		t.Errorf("/readyz = %d", code)
	}

	if code, _ := get(t, base+"/monitoring/", "", ""); code != 401 {
		t.Errorf("UI without credentials: %d, want 401", code)
	}
	if code, _ := get(t, base+"/monitoring/api/queues", "ops", "wrong"); code != 401 {
		t.Errorf("UI API with a wrong password: %d, want 401", code)
	}
	code, page := get(t, base+"/monitoring/", "ops", "s3cret-ui")
	if code != 200 || !strings.Contains(page, "<div id=\"root\">") {
		t.Errorf("UI page: %d %.200s", code, page)
	}

	_, before := get(t, base+"/metrics", "", "")
	ids := e.flood(250, "m")
	pr := tasks.PurgeRequest{Zone: "a.example", Tags: []string{"t1", "t2"}}
	ids = append(ids, e.enqueue(pr).ID)
	e.waitDone(20*time.Second, ids...)

	code, queues := get(t, base+"/monitoring/api/queues", "ops", "s3cret-ui")
	if code != 200 || !strings.Contains(queues, tasks.QueueRequests) || !strings.Contains(queues, tasks.QueueCalls) {
		t.Errorf("UI API queues: %d %.300s", code, queues)
	}
	code, calls := get(t, base+"/monitoring/api/queues/"+tasks.QueueCalls+"/completed_tasks", "ops", "s3cret-ui")
	if code != 200 || !strings.Contains(calls, "zone za") && !strings.Contains(calls, "zone zb") || strings.Contains(calls, token) {
		t.Errorf("completed calls are not shown readably (or leak the token): %d %.400s", code, calls)
	}

	_, after := get(t, base+"/metrics", "", "")
	for _, s := range []struct {
		series string
		delta  float64
	}{
		{`purgeq_api_calls_total{account="default",kind="files",outcome="accepted"}`, 3},
		{`purgeq_items_purged_total{account="default",kind="files"}`, 250},
		{`purgeq_items_purged_total{account="default",kind="tags"}`, 2},
		{`purgeq_batch_fill_ratio_count{account="default",kind="files"}`, 3},
		{`purgeq_enqueue_to_call_seconds_count{account="default"}`, 4},
	} {
		if d := metric(after, s.series) - metric(before, s.series); d < s.delta {
			t.Errorf("%s moved by %v, want at least %v", s.series, d, s.delta)
		}
	}
	for _, series := range []string{`purgeq_limit_remaining{account="default",scope="global"}`, `purgeq_cooldown_active{account="default",scope="global"}`, `purgeq_dead_letter_entries`,
		`purgeq_queue_tasks{queue="purge-calls",state="completed"}`, `purgeq_resent_calls_total`} {
		if !strings.Contains(after, series) {
			t.Errorf("/metrics lacks %s", series)
		}
	}
	if strings.Contains(after, token) || strings.Contains(after, "s3cret-ui") {
		t.Error("/metrics leaks a secret")
	}
}

// send makes a request with basic auth and extra headers.
func send(t *testing.T, method, url string, header map[string]string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	req.SetBasicAuth("ops", "s3cret-ui")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestUIRefusesCrossSite: through a running worker, the UI's API refuses a
// cross-site change (pausing a queue) with 403 despite valid credentials,
// and the queue stays unpaused; the same change from the UI's own origin,
// or from no browser at all, goes through.
func TestUIRefusesCrossSite(t *testing.T) {
	addr := freeAddr(t)
	e := setup(t, cftest.Config{}, map[string]string{"PURGE_HTTP_ADDR": addr, "PURGE_UI_USER": "ops", "PURGE_UI_PASSWORD": "s3cret-ui", "PURGE_BATCH_WAIT": "100ms"})
	e.startWorker()
	e.waitDone(20*time.Second, e.enqueue(tasks.PurgeRequest{Files: tasks.URLs("https://a.example/x")}).ID)
	base := "http://" + addr
	insp := asynq.NewInspectorFromRedisClient(e.rdb)
	isPaused := func() bool {
		info, err := insp.GetQueueInfo(tasks.QueueRequests)
		if err != nil {
			t.Fatal(err)
		}
		return info.Paused
	}
	pause, resume := base+"/monitoring/api/queues/"+tasks.QueueRequests+":pause", base+"/monitoring/api/queues/"+tasks.QueueRequests+":resume"
	for _, h := range []map[string]string{{"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}, {"Origin": "https://evil.example"}} {
		if code, body := send(t, "POST", pause, h); code != http.StatusForbidden {
			t.Errorf("cross-site pause with %v: %d %.100s, want 403", h, code, body)
		}
		if isPaused() {
			t.Fatalf("a cross-site request with %v paused the queue", h)
		}
	}
	for _, h := range []map[string]string{{"Sec-Fetch-Site": "same-origin", "Origin": base}, {"Origin": base}, nil} {
		if code, body := send(t, "POST", pause, h); code/100 != 2 || !isPaused() {
			t.Errorf("same-origin pause with %v: %d %.100s, paused %v", h, code, body, isPaused())
		}
		if code, _ := send(t, "POST", resume, h); code/100 != 2 || isPaused() {
			t.Errorf("same-origin resume with %v: %d", h, code)
		}
	}
}

// TestMetricsOwnAddress: with PURGE_METRICS_ADDR, /metrics, /healthz and
// /readyz answer there without credentials (the UI is not served there),
// /metrics leaves PURGE_HTTP_ADDR, and health stays on it.
func TestMetricsOwnAddress(t *testing.T) {
	addr, maddr := freeAddr(t), freeAddr(t)
	e := setup(t, cftest.Config{}, map[string]string{"PURGE_HTTP_ADDR": addr, "PURGE_METRICS_ADDR": maddr,
		"PURGE_UI_USER": "ops", "PURGE_UI_PASSWORD": "s3cret-ui", "PURGE_BATCH_WAIT": "100ms"})
	e.startWorker()
	base, mbase := "http://"+addr, "http://"+maddr
	testwait.For(t, 5*time.Second, "the metrics address", func() bool {
		resp, err := http.Get(mbase + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	})
	e.waitDone(20*time.Second, e.enqueue(tasks.PurgeRequest{Files: tasks.URLs("https://a.example/m")}).ID)

	code, page := get(t, mbase+"/metrics", "", "")
	if code != 200 || metric(page, `purgeq_items_purged_total{account="default",kind="files"}`) < 1 || !strings.Contains(page, "purgeq_dead_letter_entries") {
		t.Errorf("/metrics on PURGE_METRICS_ADDR: %d %.300s", code, page)
	}
	if strings.Contains(page, token) || strings.Contains(page, "s3cret-ui") {
		t.Error("/metrics leaks a secret")
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, _ := get(t, mbase+p, "", ""); code != 200 {
			t.Errorf("%s on PURGE_METRICS_ADDR: %d", p, code)
		}
		if code, _ := get(t, base+p, "", ""); code != 200 {
			t.Errorf("%s on PURGE_HTTP_ADDR: %d", p, code)
		}
	}
	if code, _ := get(t, base+"/metrics", "ops", "s3cret-ui"); code != 404 {
		t.Errorf("/metrics still on PURGE_HTTP_ADDR: %d, want 404", code)
	}
	if code, _ := get(t, mbase+"/monitoring/", "ops", "s3cret-ui"); code != 404 {
		t.Errorf("the UI on PURGE_METRICS_ADDR: %d, want 404", code)
	}
	if code, _ := get(t, base+"/monitoring/", "ops", "s3cret-ui"); code != 200 {
		t.Errorf("the UI on PURGE_HTTP_ADDR: %d", code)
	}
}
