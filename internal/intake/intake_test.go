package intake

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/purgeq/purgeq/batching"
	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/tasks"
)

// memQueue builds with the real client and "queues" in memory.
type memQueue struct {
	client *tasks.Client
	queued []*tasks.Request
}

func (q *memQueue) Build(pr tasks.PurgeRequest) (*tasks.Request, error) { return q.client.Build(pr) }

func (q *memQueue) EnqueueBuilt(_ context.Context, r *tasks.Request) (tasks.Receipt, error) {
	q.queued = append(q.queued, r)
	return tasks.Receipt{ID: r.ID, Items: r.Total()}, nil
}

func (q *memQueue) Status(_ context.Context, id string) (batching.Status, error) {
	return batching.Status{}, batching.ErrUnknownRequest
}

func newTestHandler(t *testing.T, log *bytes.Buffer) (http.Handler, *memQueue) {
	t.Helper()
	zones, err := tasks.ParseZones("example.com=z1,example.org=z2")
	if err != nil {
		t.Fatal(err)
	}
	q := &memQueue{client: tasks.NewClient(nil, tasks.ClientOptions{Zones: zones})}
	l := zerolog.Nop()
	if log != nil {
		l = zerolog.New(log)
	}
	return Handler(Options{Queue: q, Tokens: []string{"s3cr3t"}, Zones: func() tasks.Zones { return zones }, MaxBody: 1 << 20, Log: l}), q
}

func do(h http.Handler, method, path, body string, header ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer s3cr3t")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// TestPurgeEverythingFalse: CONTRACT's example body sends
// "purge_everything":false; it means no purge-everything.
func TestPurgeEverythingFalse(t *testing.T) {
	h, q := newTestHandler(t, nil)
	rec := do(h, "POST", "/v1/purge", `{"zone":"example.com","files":["https://example.com/a"],"tags":[],"hosts":[],"prefixes":[],"purge_everything":false,"idempotency_key":"k1","soft":false}`)
	if rec.Code != 202 || len(q.queued) != 1 {
		t.Fatalf("purge_everything false: %d %s", rec.Code, rec.Body)
	}
	if got := q.queued[0].Zones["z1"]; len(got[purge.Everything]) != 0 || len(got[purge.Files]) != 1 {
		t.Errorf("queued %v, want the file only", q.queued[0].Zones)
	}
	if rec := do(h, "POST", "/v1/purge", `{"zone":"example.com","purge_everything":true}`); rec.Code != 202 || len(q.queued[1].Zones["z1"][purge.Everything]) != 1 {
		t.Errorf("purge_everything true: %d %s", rec.Code, rec.Body)
	}
	if rec := do(h, "POST", "/v1/purge", `{"zone":"example.com","purge_everything":false}`); rec.Code != 400 || len(q.queued) != 2 {
		t.Errorf("purge_everything false and nothing else: %d %s", rec.Code, rec.Body)
	}
	// Cloudflare-compatible: false beside files is not a mix.
	if rec := do(h, "POST", "/client/v4/zones/z1/purge_cache", `{"purge_everything":false,"files":["https://example.com/b"]}`); rec.Code != 200 || len(q.queued) != 3 {
		t.Errorf("cloudflare purge_everything false: %d %s", rec.Code, rec.Body)
	}
	if rec := do(h, "POST", "/client/v4/zones/z1/purge_cache", `{"purge_everything":true,"files":["https://example.com/b"]}`); rec.Code != 400 || !strings.Contains(rec.Body.String(), "1092") {
		t.Errorf("cloudflare purge_everything true with files: %d %s", rec.Code, rec.Body)
	}
}

// TestIdempotencyKeyHeader: the key comes from the Idempotency-Key header
// or the body's idempotency_key; both must agree.
func TestIdempotencyKeyHeader(t *testing.T) {
	h, q := newTestHandler(t, nil)
	const body = `{"zone":"example.com","tags":["x"]}`
	withKey := func(key string) string {
		return `{"zone":"example.com","tags":["x"],"idempotency_key":"` + key + `"}`
	}
	ids := map[string]string{}
	for _, tc := range []struct {
		name, body string
		header     []string
	}{
		{"body", withKey("cms-42"), nil},
		{"header", body, []string{"Idempotency-Key", "cms-42"}},
		{"both, equal", withKey("cms-42"), []string{"Idempotency-Key", "cms-42"}},
		{"header twice, equal", body, []string{"Idempotency-Key", "cms-42", "Idempotency-Key", "cms-42"}},
	} {
		rec := do(h, "POST", "/v1/purge", tc.body, tc.header...)
		var rc tasks.Receipt
		json.Unmarshal(rec.Body.Bytes(), &rc)
		if rec.Code != 202 || !q.queued[len(q.queued)-1].Idempotent {
			t.Errorf("%s: %d %s, idempotent %v", tc.name, rec.Code, rec.Body, q.queued[len(q.queued)-1].Idempotent)
		}
		ids[rc.ID] = tc.name
	}
	if len(ids) != 1 {
		t.Errorf("one key gave several ids: %v", ids)
	}
	n := len(q.queued)
	for _, tc := range []struct {
		name, body string
		header     []string
	}{
		{"both, different", withKey("cms-42"), []string{"Idempotency-Key", "cms-43"}},
		{"header twice, different", body, []string{"Idempotency-Key", "cms-42", "Idempotency-Key", "cms-43"}},
	} {
		rec := do(h, "POST", "/v1/purge", tc.body, tc.header...)
		var out errorBody
		json.Unmarshal(rec.Body.Bytes(), &out)
		if rec.Code != 400 || !strings.Contains(out.Error, "Idempotency-Key") || len(q.queued) != n {
			t.Errorf("%s: %d %s", tc.name, rec.Code, rec.Body)
		}
	}
	if rec := do(h, "POST", "/v1/purge", body); rec.Code != 202 || q.queued[len(q.queued)-1].Idempotent {
		t.Errorf("no key: %d %s", rec.Code, rec.Body)
	}
	// Cloudflare-compatible: the header only.
	rec := do(h, "POST", "/client/v4/zones/z1/purge_cache", `{"tags":["x"]}`, "Idempotency-Key", "cms-42")
	var env purge.Envelope
	json.Unmarshal(rec.Body.Bytes(), &env)
	if rec.Code != 200 || env.Result == nil || ids[env.Result.ID] == "" {
		t.Errorf("cloudflare with the header: %d %s, want id of %v", rec.Code, rec.Body, ids)
	}
}

// TestAccessLogNamesPurgeRequest: the access log line of a request carries
// the purge request's id, its zones and its item count.
func TestAccessLogNamesPurgeRequest(t *testing.T) {
	var buf bytes.Buffer
	h, _ := newTestHandler(t, &buf)
	type line struct {
		Message     string   `json:"message"`
		HTTPRequest string   `json:"http_request"`
		Status      int      `json:"status"`
		Request     string   `json:"request"`
		Zones       []string `json:"zones"`
		Items       *int     `json:"items"`
		Duplicate   bool     `json:"duplicate"`
	}
	last := func(t *testing.T) line {
		t.Helper()
		lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
		buf.Reset()
		var l line
		if err := json.Unmarshal([]byte(lines[len(lines)-1]), &l); err != nil || l.Message != "request" || l.HTTPRequest == "" {
			t.Fatalf("access log line %q: %v", lines[len(lines)-1], err)
		}
		return l
	}
	items := func(l line) int {
		if l.Items == nil {
			return -1
		}
		return *l.Items
	}

	rec := do(h, "POST", "/v1/purge", `{"files":["https://example.com/a","https://www.example.org/b"],"hosts":["example.org"]}`)
	var rc tasks.Receipt
	json.Unmarshal(rec.Body.Bytes(), &rc)
	if l := last(t); rec.Code != 202 || rc.ID == "" || l.Request != rc.ID || !slices.Equal(l.Zones, []string{"z1", "z2"}) || items(l) != 3 || l.Status != 202 {
		t.Errorf("queued: %d %s; logged %+v", rec.Code, rec.Body, l)
	}

	rec = do(h, "POST", "/v1/purge", `{"zone":"example.org","tags":["ok","bad tag"]}`)
	if l := last(t); rec.Code != 400 || !slices.Equal(l.Zones, []string{"example.org"}) || items(l) != 2 {
		t.Errorf("refused: %d %s; logged %+v", rec.Code, rec.Body, l)
	}

	rec = do(h, "POST", "/client/v4/zones/z2/invalidate_cache", `{"tags":["a","b"]}`)
	var env purge.Envelope
	json.Unmarshal(rec.Body.Bytes(), &env)
	if l := last(t); rec.Code != 200 || env.Result == nil || l.Request != env.Result.ID || !slices.Equal(l.Zones, []string{"z2"}) || items(l) != 2 {
		t.Errorf("cloudflare: %d %s; logged %+v", rec.Code, rec.Body, l)
	}

	do(h, "GET", "/v1/purge/abc123", "")
	if l := last(t); l.Request != "abc123" || l.Status != 404 || l.Items != nil {
		t.Errorf("status: logged %+v", l)
	}

	do(h, "GET", "/healthz", "")
	if l := last(t); l.Request != "" || l.Zones != nil || l.Items != nil {
		t.Errorf("healthz: logged %+v", l)
	}
}
