package intake

import (
	"bytes"
	"testing"

	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/tasks"
)

// FuzzBody feeds arbitrary bodies through the intake's decoding, item
// parsing and validation. It must never panic, and a request it accepts
// holds only valid, normalised items of configured zones.
func FuzzBody(f *testing.F) {
	for _, seed := range []string{
		`{"files":["https://example.com/a?x=1&y=2"],"zone":"example.com"}`,
		`{"files":[{"url":"https://example.com/m","headers":{"CF-Device-Type":"mobile"}}]}`,
		`{"tags":["a","B"],"hosts":["www.example.org"],"prefixes":["example.com/blog/"],"zone":"example.org"}`,
		`{"purge_everything":true,"zone":"example.com"}`,
		`{"zone":"example.com","files":["https://example.com/a"],"tags":[],"hosts":[],"prefixes":[],"purge_everything":false,"idempotency_key":"k","soft":false}`,
		`{"purge_everything":false}`,
		`{"files":[42,null,{"url":""}],"idempotency_key":"k","soft":true}`,
	} {
		f.Add([]byte(seed))
	}
	zones, err := tasks.ParseZones("example.com=z1,example.org=z2")
	if err != nil {
		f.Fatal(err)
	}
	client := tasks.NewClient(nil, tasks.ClientOptions{Zones: zones})
	f.Fuzz(func(t *testing.T, data []byte) {
		b, _, err := parseBody(bytes.NewReader(data), 1<<20)
		if err != nil {
			return
		}
		pr, bad := b.request()
		req, err := client.Build(pr)
		if err != nil || len(bad) > 0 {
			return
		}
		if req.Total() == 0 {
			t.Fatalf("an accepted request has no items: %s", data)
		}
		for zone, kinds := range req.Zones {
			if zone != "z1" && zone != "z2" {
				t.Fatalf("unknown zone %q accepted", zone)
			}
			for kind, items := range kinds {
				for _, it := range items {
					if kind == purge.Files {
						f, err := purge.ParseFileKey(it)
						if err != nil {
							t.Fatalf("bad file key %q", it)
						}
						it = f.URL
					}
					if again, err := purge.Normalize(kind, it); err != nil || (kind != purge.Files && again != it) {
						t.Fatalf("%s item %q is not valid and normalised: %q, %v", kind, it, again, err)
					}
				}
			}
		}
	})
}
