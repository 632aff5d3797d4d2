package intake

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/purgeq/purgeq/internal/config"
	"github.com/purgeq/purgeq/limits/rate"
	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/tasks"
)

// fakeWindows lets through up to left items, then asks to wait.
type fakeWindows struct{ left int }

func (f *fakeWindows) Take(_ context.Context, _ string, n int, r rate.Rate) (bool, time.Duration, error) {
	if n > f.left {
		return false, 1500 * time.Millisecond, nil
	}
	f.left -= n
	return true, 0, nil
}

func producersHandler(t *testing.T) (http.Handler, *memQueue) {
	t.Helper()
	zones, err := tasks.ParseZones("example.com=z1,example.org=z2")
	if err != nil {
		t.Fatal(err)
	}
	q := &memQueue{client: tasks.NewClient(nil, tasks.ClientOptions{Zones: zones})}
	producers := []config.Producer{
		{Name: "cms-blog", Token: "cms", Zones: []string{"z1"}, Kinds: []purge.Kind{purge.Files, purge.Tags}, Priority: "normal", Rate: rate.Per(10, time.Minute)},
		{Name: "ops", Token: "ops", Kinds: purge.Kinds[:4], Everything: true, Priority: "high"},
	}
	return Handler(Options{Queue: q, Producers: producers, Tokens: []string{"legacy"}, Windows: &fakeWindows{left: 10},
		Zones: func() tasks.Zones { return zones }, MaxBody: 1 << 20, Log: zerolog.Nop()}), q
}

func post(h http.Handler, token, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest("POST", "/v1/purge", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// TestProducerRights: a producer is refused (403, naming what) a zone, a
// kind or purge-everything it may not purge; beyond its rate it gets 429
// with Retry-After; nothing is queued either way.
func TestProducerRights(t *testing.T) {
	h, q := producersHandler(t)
	for _, tc := range []struct {
		token, body string
		status      int
		names       string
	}{
		{"cms", `{"files":["https://example.org/a"]}`, 403, "zone example.org"},
		{"cms", `{"zone":"example.com","hosts":["www.example.com"]}`, 403, "kind hosts in example.com"},
		{"cms", `{"zone":"example.com","purge_everything":true}`, 403, "purge everything in example.com"},
		{"cms", `{"zone":"example.com","tags":["a","b","c","d","e","f","g","h"]}`, 202, ""},
		{"cms", `{"zone":"example.com","tags":["i","j","k"]}`, 429, "over its rate"},
		{"ops", `{"zone":"example.org","purge_everything":true}`, 202, ""},
		{"legacy", `{"zone":"example.org","hosts":["example.org"]}`, 202, ""},
	} {
		rec := post(h, tc.token, tc.body)
		if rec.Code != tc.status || !strings.Contains(rec.Body.String(), tc.names) {
			t.Errorf("%s %s: %d %s; want %d naming %q", tc.token, tc.body, rec.Code, rec.Body, tc.status, tc.names)
		}
		if tc.status == 429 && rec.Header().Get("Retry-After") != "2" {
			t.Errorf("429 with Retry-After %q, want 2", rec.Header().Get("Retry-After"))
		}
	}
	if len(q.queued) != 3 {
		t.Errorf("%d requests queued, want 3", len(q.queued))
	}
	if got := []string{q.queued[0].Producer, q.queued[1].Producer, q.queued[2].Producer}; strings.Join(got, " ") != "cms-blog ops intake-1" {
		t.Errorf("producers recorded %v", got)
	}
}

// TestIdempotencyKeysPerProducer: two producers sending the same key queue
// two requests; a PURGE_INTAKE_TOKENS token keeps the key shared with the
// CLI (the same id as a CLI request with that key).
func TestIdempotencyKeysPerProducer(t *testing.T) {
	h, _ := producersHandler(t)
	ids := map[string]string{}
	for _, token := range []string{"cms", "ops", "legacy"} {
		rec := post(h, token, `{"zone":"example.com","tags":["t"],"idempotency_key":"cms-publish-4711"}`)
		var rc tasks.Receipt
		if rec.Code != 202 || json.Unmarshal(rec.Body.Bytes(), &rc) != nil {
			t.Fatalf("%s: %d %s", token, rec.Code, rec.Body)
		}
		ids[token] = rc.ID
	}
	zones, _ := tasks.ParseZones("example.com=z1")
	cli, err := tasks.NewClient(nil, tasks.ClientOptions{Zones: zones}).Build(tasks.PurgeRequest{Zone: "z1", Tags: []string{"t"}, IdempotencyKey: "cms-publish-4711"})
	if err != nil {
		t.Fatal(err)
	}
	if ids["cms"] == ids["ops"] || ids["cms"] == ids["legacy"] || ids["legacy"] != cli.ID {
		t.Errorf("ids %v (CLI %v): want one per producer, the legacy token's equal to the CLI's", ids, cli)
	}
}
