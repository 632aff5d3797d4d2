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
		{`purgeq_api_calls_total{kind="files",outcome="accepted"}`, 3},
		{`purgeq_items_purged_total{kind="files"}`, 250},
		{`purgeq_items_purged_total{kind="tags"}`, 2},
		{`purgeq_batch_fill_ratio_count{kind="files"}`, 3},
		{`purgeq_enqueue_to_call_seconds_count`, 4},
	} {
		if d := metric(after, s.series) - metric(before, s.series); d < s.delta {
			t.Errorf("%s moved by %v, want at least %v", s.series, d, s.delta)
		}
	}
	for _, series := range []string{`purgeq_limit_remaining{scope="global"}`, `purgeq_cooldown_active{scope="global"}`, `purgeq_dead_letter_entries`,
		`purgeq_queue_tasks{queue="purge-calls",state="completed"}`, `purgeq_resent_calls_total`} {
		if !strings.Contains(after, series) {
			t.Errorf("/metrics lacks %s", series)
		}
	}
	if strings.Contains(after, token) || strings.Contains(after, "s3cret-ui") {
		t.Error("/metrics leaks a secret")
	}
}
