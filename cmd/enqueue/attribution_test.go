package main

import (
	"context"
	"strings"
	"testing"
)

// TestSourceRecorded: a CLI request records producer cli and its source:
// --source when given, else user@host with the CI commit and pipeline.
func TestSourceRecorded(t *testing.T) {
	setup(t)
	t.Setenv("GITHUB_SHA", "abc123")
	t.Setenv("GITHUB_RUN_ID", "77")
	c, err := open(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"https://example.com/a"}, "commit abc123 pipeline 77"},
		{[]string{"--source", "release 4.2", "https://example.com/b"}, "release 4.2"},
		{[]string{"--source", "streamed", "--from", "-"}, "streamed"},
	} {
		r := enqueueCmd(t, "https://example.com/c\n", tc.args...)
		if r.code != 0 {
			t.Fatalf("%v: %+v", tc.args, r)
		}
		st, err := c.requests.Status(context.Background(), strings.TrimSpace(r.stdout))
		if err != nil || st.Producer != "cli" || !strings.Contains(st.Source, tc.want) {
			t.Errorf("%v: status %+v, %v; want producer cli, source with %q", tc.args, st, err, tc.want)
		}
	}
}

// TestEverythingNeedsZone: --everything is never implied from a single
// configured zone.
func TestEverythingNeedsZone(t *testing.T) {
	rdb := setup(t)
	t.Setenv("PURGE_ZONES", "example.com=zone-com")
	if r := enqueueCmd(t, "", "--everything"); r.code != 2 || !strings.Contains(r.stderr, "--zone") {
		t.Errorf("--everything without --zone: %+v", r)
	}
	if n := pending(t, rdb); n != 0 {
		t.Errorf("%d requests queued", n)
	}
	if r := enqueueCmd(t, "", "--everything", "--zone", "example.com"); r.code != 0 {
		t.Errorf("--everything --zone example.com: %+v", r)
	}
}
