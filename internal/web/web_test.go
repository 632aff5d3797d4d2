package web_test

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/purgeq/purgeq/internal/testredis"
	"github.com/purgeq/purgeq/internal/web"
)

var srv *testredis.Server

func TestMain(m *testing.M) { testredis.Main(m, &srv) }

const user, pass = "ops", "s3cret-ui"

// serve starts the worker's HTTP side on the test Redis, with one pending
// task in each of the given queues.
func serve(t *testing.T, o web.Options, queues ...string) (*httptest.Server, *asynq.Inspector) {
	t.Helper()
	rdb := testredis.Connect(t)
	testredis.Flush(t, rdb)
	ac := asynq.NewClientFromRedisClient(rdb)
	for _, q := range queues {
		if _, err := ac.Enqueue(asynq.NewTask("t", nil), asynq.Queue(q)); err != nil {
			t.Fatal(err)
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewGauge(prometheus.GaugeOpts{Name: "purgeq_test_gauge"}))
	o.RedisConn, o.Redis, o.Gatherer = asynq.RedisClientOpt{Addr: srv.Addr}, rdb, reg
	h, closeUI, err := web.Handler(o)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(h)
	t.Cleanup(func() { ts.Close(); closeUI() })
	return ts, asynq.NewInspectorFromRedisClient(rdb)
}

func do(t *testing.T, method, url string, auth bool, header map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth {
		req.SetBasicAuth(user, pass)
	}
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

func paused(t *testing.T, insp *asynq.Inspector, q string) bool {
	t.Helper()
	info, err := insp.GetQueueInfo(q)
	if err != nil {
		t.Fatal(err)
	}
	return info.Paused
}

// TestUIRefusesCrossSiteChanges: a state-changing call to the UI's API that
// a browser marks cross-site (Sec-Fetch-Site) or from another origin
// (Origin ≠ Host) is refused with 403 and changes nothing, valid
// credentials or not; same-origin calls, and calls from no browser at all,
// go through; reading is never refused.
func TestUIRefusesCrossSiteChanges(t *testing.T) {
	for _, withAuth := range []bool{true, false} {
		o := web.Options{}
		if withAuth {
			o.User, o.Password = user, pass
		}
		var queues []string
		refused := []map[string]string{
			{"Sec-Fetch-Site": "cross-site"},
			{"Sec-Fetch-Site": "same-site"},
			{"Sec-Fetch-Site": "cross-site", "Origin": "HOST"}, // Sec-Fetch-Site decides
			{"Origin": "https://evil.example"},
			{"Origin": "http://evil.example"},
			{"Origin": "null"},
			{"Origin": "http://HOSTPORT-OTHER"}, // same host, another port
		}
		allowed := []map[string]string{
			nil, // curl, scripts
			{"Sec-Fetch-Site": "same-origin"},
			{"Sec-Fetch-Site": "none"},
			{"Sec-Fetch-Site": "same-origin", "Origin": "HOST"},
			{"Origin": "HOST"},
		}
		for i := range refused {
			queues = append(queues, "refused"+string(rune('a'+i)))
		}
		for i := range allowed {
			queues = append(queues, "allowed"+string(rune('a'+i)))
		}
		ts, insp := serve(t, o, queues...)
		host := strings.TrimPrefix(ts.URL, "http://")
		hostOnly, port, _ := strings.Cut(host, ":")
		fill := func(h map[string]string) map[string]string {
			out := map[string]string{}
			for k, v := range h {
				v = strings.ReplaceAll(v, "HOSTPORT-OTHER", hostOnly+":1"+port)
				out[k] = strings.ReplaceAll(v, "HOST", ts.URL)
			}
			return out
		}
		for i, h := range refused {
			q := "refused" + string(rune('a'+i))
			for _, m := range []string{"POST", "DELETE"} {
				url := ts.URL + "/monitoring/api/queues/" + q + ":pause"
				if m == "DELETE" {
					url = ts.URL + "/monitoring/api/queues/" + q + "/pending_tasks:delete_all"
				}
				if code, body := do(t, m, url, withAuth, fill(h)); code != http.StatusForbidden {
					t.Errorf("auth=%v %s %s with %v: %d %.100s, want 403", withAuth, m, url, fill(h), code, body)
				}
			}
			if paused(t, insp, q) {
				t.Errorf("auth=%v: a refused request paused %s", withAuth, q)
			}
			if info, _ := insp.GetQueueInfo(q); info == nil || info.Pending != 1 {
				t.Errorf("auth=%v: a refused request deleted %s's task: %+v", withAuth, q, info)
			}
			// reading stays open to any page the browser loads it from (it is
			// the browser's same-origin policy that keeps the answer private)
			if code, _ := do(t, "GET", ts.URL+"/monitoring/api/queues", withAuth, fill(h)); code != 200 {
				t.Errorf("auth=%v GET with %v: %d, want 200", withAuth, fill(h), code)
			}
		}
		for i, h := range allowed {
			q := "allowed" + string(rune('a'+i))
			if code, body := do(t, "POST", ts.URL+"/monitoring/api/queues/"+q+":pause", withAuth, fill(h)); code/100 != 2 {
				t.Errorf("auth=%v pause with %v: %d %.100s, want 2xx", withAuth, fill(h), code, body)
			}
			if !paused(t, insp, q) {
				t.Errorf("auth=%v: an allowed request with %v did not pause %s", withAuth, fill(h), q)
			}
		}
		if withAuth {
			// credentials are still required of an allowed request
			if code, _ := do(t, "POST", ts.URL+"/monitoring/api/queues/alloweda:resume", false, nil); code != 401 {
				t.Errorf("resume without credentials: %d, want 401", code)
			}
		}
	}
}

// TestMetricsElsewhere: with MetricsElsewhere, /metrics leaves the UI's
// handler (health stays), and OpsHandler serves /metrics, /healthz and
// /readyz without credentials and without the UI.
func TestMetricsElsewhere(t *testing.T) {
	ts, _ := serve(t, web.Options{User: user, Password: pass})
	if code, body := do(t, "GET", ts.URL+"/metrics", false, nil); code != 200 || !strings.Contains(body, "purgeq_test_gauge") {
		t.Errorf("default: /metrics on the UI's address = %d %.100s", code, body)
	}

	rdb := testredis.Connect(t)
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewGauge(prometheus.GaugeOpts{Name: "purgeq_test_gauge"}))
	o := web.Options{User: user, Password: pass, MetricsElsewhere: true, RedisConn: asynq.RedisClientOpt{Addr: srv.Addr}, Redis: rdb, Gatherer: reg}
	h, closeUI, err := web.Handler(o)
	if err != nil {
		t.Fatal(err)
	}
	defer closeUI()
	ui := httptest.NewServer(h)
	defer ui.Close()
	ops := httptest.NewServer(web.OpsHandler(o))
	defer ops.Close()

	if code, _ := do(t, "GET", ui.URL+"/metrics", true, nil); code != 404 {
		t.Errorf("/metrics still on the UI's address: %d, want 404", code)
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, _ := do(t, "GET", ui.URL+p, false, nil); code != 200 {
			t.Errorf("%s on the UI's address: %d", p, code)
		}
	}
	if code, body := do(t, "GET", ops.URL+"/metrics", false, nil); code != 200 || !strings.Contains(body, "purgeq_test_gauge") {
		t.Errorf("/metrics on its own address without credentials = %d %.100s", code, body)
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, _ := do(t, "GET", ops.URL+p, false, nil); code != 200 {
			t.Errorf("%s on the metrics address: %d", p, code)
		}
	}
	if code, _ := do(t, "GET", ops.URL+"/monitoring/", true, nil); code != 404 {
		t.Errorf("the UI is served on the metrics address: %d, want 404", code)
	}
	if code, _ := do(t, "POST", ops.URL+"/metrics", false, nil); code != 405 {
		t.Errorf("POST /metrics: %d, want 405", code)
	}
	// readiness follows Redis on the metrics address too
	bad := o
	bad.Redis = testredisDown(t)
	down := httptest.NewServer(web.OpsHandler(bad))
	defer down.Close()
	if code, _ := do(t, "GET", down.URL+"/readyz", false, nil); code != 503 {
		t.Errorf("/readyz with Redis unreachable: %d, want 503", code)
	}
}

// testredisDown is a client of an address where nothing listens.
func testredisDown(t *testing.T) redis.UniversalClient {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	t.Cleanup(func() { c.Close() })
	return c
}
