package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/purgeq/purgeq/batching"
)

// TestHistoryCommand: once purged, `enqueue history URL --json` (through
// Redis, and through the intake with --server) names the call with the
// simulator's purge id and the request with its producer and source.
func TestHistoryCommand(t *testing.T) {
	setup(t)
	sim := roomySim(t)
	startWorker(t, sim)
	base := startIntake(t)
	r := enqueueCmd(t, "", "--wait", "--source", "release 7", "https://example.com/h/1")
	if r.code != 0 {
		t.Fatal(r)
	}
	id := strings.TrimSpace(r.stdout)
	var cfID string
	for _, c := range sim.Calls() {
		if c.Accepted() && len(c.Items) == 1 && c.Items[0] == "https://example.com/h/1" {
			cfID = c.ResultID
		}
	}
	check := func(name string, out string) {
		var es []batching.Entry
		if err := json.Unmarshal([]byte(out), &es); err != nil || len(es) != 1 {
			t.Fatalf("%s: %q, %v", name, out, err)
		}
		e := es[0]
		if e.CloudflareID == "" || e.CloudflareID != cfID || e.Zone != "example.com" || e.Kind != "files" ||
			len(e.Requests) != 1 || e.Requests[0].ID != id || e.Requests[0].Producer != "cli" || e.Requests[0].Source != "release 7" {
			t.Errorf("%s: %+v; want the simulator's id %s and request %s", name, e, cfID, id)
		}
	}
	h := enqueueCmd(t, "", "history", "--json", "https://EXAMPLE.com/h/1")
	if h.code != 0 {
		t.Fatal(h)
	}
	check("through Redis", h.stdout)
	t.Setenv("PURGE_SERVER_TOKEN", intakeToken)
	hs := enqueueCmd(t, "", "--server", base, "history", "https://example.com/h/1", "--json")
	if hs.code != 0 {
		t.Fatal(hs)
	}
	check("through the intake", hs.stdout)
	if text := enqueueCmd(t, "", "history", "https://example.com/h/1"); text.code != 0 || !strings.Contains(text.stdout, cfID) || !strings.Contains(text.stdout, "release 7") || !strings.Contains(text.stdout, "default example.com files") {
		t.Errorf("text: %+v", text)
	}
	if none := enqueueCmd(t, "", "history", "--json", "https://example.com/never"); none.code != 0 || strings.TrimSpace(none.stdout) != "[]" {
		t.Errorf("an item never purged: %+v", none)
	}
}
