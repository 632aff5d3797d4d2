package main

import (
	"context"
	"strings"
	"testing"

	"github.com/purgeq/purgeq/tasks"
)

// TestNoZonesYet: before any worker published its zones, with PURGE_ZONES
// empty, queueing fails with exit 1 (not the user's input) and says why and
// what to do; --help, status and dlq still work; once a worker publishes its
// zones, the same command queues.
func TestNoZonesYet(t *testing.T) {
	rdb := setup(t)
	t.Setenv("PURGE_ZONES", "")

	for _, args := range [][]string{
		{"https://example.com/a"},
		{"--tag", "product-1", "--zone", "example.com"},
		{"--zone", "example.com", "--from", "-"},
	} {
		r := enqueueCmd(t, "https://example.com/b\n", args...)
		if r.code != 1 {
			t.Errorf("%v: exit %d, want 1: %+v", args, r.code, r)
		}
		for _, want := range []string{"no worker has published its zones", "PURGE_ZONES is empty", "start a worker", "set PURGE_ZONES", "nothing was queued"} {
			if !strings.Contains(r.stderr, want) {
				t.Errorf("%v: the message lacks %q: %q", args, want, r.stderr)
			}
		}
		if strings.Contains(r.stderr, "no configured zone matches") {
			t.Errorf("%v: still reported as bad input: %q", args, r.stderr)
		}
	}
	if n := pending(t, rdb); n != 0 {
		t.Errorf("%d requests pending, want none", n)
	}

	if r := enqueueCmd(t, "", "--help"); r.code != 0 {
		t.Errorf("--help: %+v", r)
	}
	if r := enqueueCmd(t, "", "dlq", "list"); r.code != 0 || strings.Contains(r.stderr, "PURGE_ZONES is empty") {
		t.Errorf("dlq list: %+v", r)
	}
	if r := enqueueCmd(t, "", "status", "nope"); r.code != 1 || !strings.Contains(r.stderr, "no request nope") {
		t.Errorf("status: %+v", r)
	}

	z, err := tasks.ParseZones(zones)
	if err != nil {
		t.Fatal(err)
	}
	if err := tasks.PublishZones(context.Background(), rdb, z); err != nil {
		t.Fatal(err)
	}
	if r := enqueueCmd(t, "", "https://example.com/a"); r.code != 0 {
		t.Errorf("after the worker published its zones: %+v", r)
	}
	// a host of no zone the workers know: invalid, and the workers that
	// list their zones through the API are asked to list them again
	r := enqueueCmd(t, "", "https://brand-new.example/a")
	if r.code != 2 || !strings.Contains(r.stderr, "asked to list their zones again") {
		t.Errorf("a host of no known zone: %+v", r)
	}
	if wanted, err := tasks.ZonesWanted(context.Background(), rdb); err != nil || !wanted {
		t.Errorf("the workers were not asked for a listing: %v %v", wanted, err)
	}
}
