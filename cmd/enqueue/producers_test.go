package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestIntakeProducers: producers from PURGE_CONFIG_FILE, against the real
// intake and Redis: what a producer may not purge is refused (403, named);
// beyond its rate, 429 with Retry-After (the window in Redis); the same
// idempotency key from two producers queues two requests; the status says
// who asked.
func TestIntakeProducers(t *testing.T) {
	rdb := setup(t)
	file := filepath.Join(t.TempDir(), "purgeq.yaml")
	if err := os.WriteFile(file, []byte(`
producers:
  - name: cms-blog
    token: cms-token
    zones: [example.com]
    kinds: [files, tags]
    rate: 5/1m
  - name: ops
    token: ops-token
    purge_everything: true
    priority: high
`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PURGE_CONFIG_FILE", file)
	base := startIntake(t)
	for _, tc := range []struct {
		token, body string
		status      int
		says        string
	}{
		{"cms-token", `{"files":["https://example.org/a"]}`, 403, "zone example.org"},
		{"cms-token", `{"zone":"example.com","purge_everything":true}`, 403, "purge everything in example.com"},
		{"cms-token", `{"zone":"example.com","tags":["a","b","c"],"idempotency_key":"cms-publish-4711","source":"post 4711"}`, 202, ""},
		{"cms-token", `{"zone":"example.com","tags":["d","e","f"]}`, 429, "over its rate"},
		{"ops-token", `{"zone":"example.com","tags":["a","b","c"],"idempotency_key":"cms-publish-4711"}`, 202, ""},
		{"ops-token", `{"zone":"example.org","purge_everything":true}`, 202, ""},
	} {
		code, out, h := call(t, "POST", base+"/v1/purge", tc.token, tc.body)
		if code != tc.status || (tc.says != "" && !strings.Contains(out["error"].(string), tc.says)) {
			t.Errorf("%s %s: %d %v; want %d saying %q", tc.token, tc.body, code, out, tc.status, tc.says)
		}
		if code == 429 && h.Get("Retry-After") == "" {
			t.Error("429 without Retry-After")
		}
		if code == 202 && strings.Contains(tc.body, "post 4711") {
			_, st, _ := call(t, "GET", base+"/v1/purge/"+out["id"].(string), tc.token, "")
			if st["producer"] != "cms-blog" || st["source"] != "post 4711" {
				t.Errorf("status %v: want producer cms-blog, source post 4711", st)
			}
		}
	}
	if n := pending(t, rdb); n != 3 {
		t.Errorf("%d requests queued, want 3 (the same key from two producers is two requests)", n)
	}
}
