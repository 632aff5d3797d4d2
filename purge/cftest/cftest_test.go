package cftest_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/purgeq/purgeq/limits/rate"
	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/purge/cftest"
)

const zone = "z1"

func newClient(t *testing.T, sim *cftest.Server) *purge.Client {
	t.Helper()
	c, err := purge.NewClient(purge.ClientConfig{BaseURL: sim.URL, Token: "tok", Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func classOf(err error) (purge.Class, int) {
	var pe *purge.Error
	if errors.As(err, &pe) {
		return pe.Class, pe.Code
	}
	return 0, 0
}

func TestGlobalWindowAndBlock(t *testing.T) {
	sim := cftest.NewServer(cftest.Config{Token: "tok", Zones: []string{zone}, GlobalLimit: rate.Per(5, 200*time.Millisecond), Block: 300 * time.Millisecond,
		Plan: purge.Plan{MaxFiles: 100, MaxFlex: 100, FlexRate: rate.Per(1000, time.Second), FlexBurst: 1000, URLRate: rate.Per(1000, time.Second), URLBurst: 1000}})
	defer sim.Close()
	c := newClient(t, sim)
	tags := purge.Batch{Kind: purge.Tags, Items: []string{"t"}}
	for i := range 5 {
		if _, err := c.Purge(context.Background(), zone, tags); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	_, err := c.Purge(context.Background(), zone, tags)
	if class, code := classOf(err); class != purge.RateLimited || code != purge.CodeRateLimitGlobal {
		t.Fatalf("6th call: %v, want 971", err)
	}
	blockEnd := sim.BlockedUntil()
	// Every call in the block is refused, even after the window has room.
	for time.Until(blockEnd) > 50*time.Millisecond {
		_, err := c.Purge(context.Background(), zone, tags)
		if class, _ := classOf(err); class != purge.RateLimited {
			t.Fatalf("call during block: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(time.Until(blockEnd) + 10*time.Millisecond)
	if _, err := c.Purge(context.Background(), zone, tags); err != nil {
		t.Fatalf("after block: %v", err)
	}
	st := sim.Stats()
	if st.Exceeded != 1 || st.DuringBlock == 0 || st.MaxInWindow != 5 || st.Accepted != 6 {
		t.Errorf("stats = %+v", st)
	}
}

func TestBuckets(t *testing.T) {
	plan := purge.Plan{MaxFiles: 100, MaxFlex: 100, FlexRate: rate.Per(1, time.Hour), FlexBurst: 2, URLRate: rate.Per(1, time.Hour), URLBurst: 150}
	sim := cftest.NewServer(cftest.Config{Token: "tok", Zones: []string{zone}, Plan: plan})
	defer sim.Close()
	c := newClient(t, sim)
	ctx := context.Background()
	for range 2 {
		if _, err := c.Purge(ctx, zone, purge.Batch{Kind: purge.Hosts, Items: []string{"a.example"}}); err != nil {
			t.Fatal(err)
		}
	}
	// The flex bucket is shared by tags, hosts, prefixes and everything.
	_, err := c.Purge(ctx, zone, purge.Batch{Kind: purge.Everything, Items: []string{purge.EverythingKey}})
	var pe *purge.Error
	if !errors.As(err, &pe) || pe.Code != purge.CodeRateLimitPurge || pe.Scope != purge.ScopeFlex || pe.RetryAfter <= 0 {
		t.Fatalf("3rd flex call: %v", err)
	}
	// The URL bucket counts URLs: 100 fit, 100 more do not, 50 do.
	batch := func(n int) purge.Batch {
		b := purge.Batch{Kind: purge.Files}
		for i := range n {
			b.Items = append(b.Items, fmt.Sprintf("https://a.example/%d", i))
		}
		return b
	}
	if _, err := c.Purge(ctx, zone, batch(100)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Purge(ctx, zone, batch(100)); !errors.As(err, &pe) || pe.Scope != purge.ScopeURL {
		t.Fatalf("URL bucket: %v", err)
	}
	if _, err := c.Purge(ctx, zone, batch(50)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Purge(ctx, zone, batch(101)); !errors.As(err, &pe) || pe.Code != purge.CodeTooManyFiles {
		t.Fatalf("over the cap: %v", err)
	}
	if st := sim.Stats(); st.Bucket429 != 2 || st.Items != 152 {
		t.Errorf("stats = %+v", st)
	}
}

func TestValidationCodes(t *testing.T) {
	sim := cftest.NewServer(cftest.Config{Token: "tok", Zones: []string{zone}})
	defer sim.Close()
	tests := []struct {
		body string
		code int
	}{
		{`{"purge_everything":true,"files":["https://a.example/"]}`, purge.CodeEverythingMixed},
		{`{"purge_everything":false}`, purge.CodeEverythingFalse},
		{`{"files":"https://a.example/"}`, purge.CodeNotArrays},
		{`{}`, purge.CodeMissingField},
		{`{"tags":["` + strings.Repeat("x", 1025) + `"]}`, purge.CodeTagTooLong},
		{`{"hosts":["a.example:80"]}`, purge.CodeInvalidHost},
		{`{"files":["not-a-url"]}`, purge.CodeUnableToPurge},
	}
	for _, tt := range tests {
		req, _ := http.NewRequest(http.MethodDelete, sim.URL+"/zones/"+zone+"/purge_cache", strings.NewReader(tt.body))
		req.Header.Set("Authorization", "Bearer tok")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		calls := sim.Calls()
		if last := calls[len(calls)-1]; resp.StatusCode != 400 || last.Code != tt.code {
			t.Errorf("%s: status %d code %d, want 400 %d", tt.body[:min(40, len(tt.body))], resp.StatusCode, last.Code, tt.code)
		}
	}
}

// Example shows the simulator standing in for Cloudflare in a test.
func Example() {
	sim := cftest.NewServer(cftest.Config{Token: "tok", Zones: []string{"zone-1"}})
	defer sim.Close()
	client, _ := purge.NewClient(purge.ClientConfig{BaseURL: sim.URL, Token: "tok"})
	_, err := client.Purge(context.Background(), "zone-1", purge.Batch{Kind: purge.Tags, Items: []string{"product-1"}})
	fmt.Println(err, sim.Calls()[0].Items, sim.Stats().Accepted)
	// Output: <nil> [product-1] 1
}
