package tasks_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/purgeq/purgeq/internal/keyspace"
	"github.com/purgeq/purgeq/internal/testredis"
	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/tasks"
)

var srv *testredis.Server

func TestMain(m *testing.M) { testredis.Main(m, &srv) }

func mustZones(t *testing.T, s string) tasks.Zones {
	t.Helper()
	z, err := tasks.ParseZones(s)
	if err != nil {
		t.Fatal(err)
	}
	return z
}

func TestParseZones(t *testing.T) {
	z := mustZones(t, " Example.com=id1 , shop.example.com=id2,example.org=id3")
	if len(z) != 3 || z[0].Name != "example.com" || z[1].ID != "id2" {
		t.Fatalf("got %+v", z)
	}
	_, err := tasks.ParseZones("example.com,=id,a.com=x/y,example.com=id9,b.com=id1,b.com=id1,bad host=z")
	for _, want := range []string{`"example.com": want name=zone-id`, `"=id"`, `"a.com=x/y"`, `"b.com=id1": zone listed twice`, `"bad host=z"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not name %s", err, want)
		}
	}
}

func TestZoneResolution(t *testing.T) {
	z := mustZones(t, "example.com=id1,shop.example.com=id2")
	for host, want := range map[string]string{"example.com": "id1", "www.example.com": "id1", "shop.example.com": "id2", "a.shop.example.com": "id2", "notexample.com": "", "WWW.Shop.Example.com": "id2", "com": ""} {
		got, _ := z.ForHost(host)
		if got.ID != want {
			t.Errorf("ForHost(%s) = %q, want %q", host, got.ID, want)
		}
	}
	for key, want := range map[string]string{"example.com": "id1", "ID2": "id2", "nope": ""} {
		got, _ := z.Lookup(key)
		if got.ID != want {
			t.Errorf("Lookup(%s) = %q, want %q", key, got.ID, want)
		}
	}
}

// TestManyZones: 10,000 zones route by suffix and are named briefly in
// errors (not 10,000 of them).
func TestManyZones(t *testing.T) {
	var spec []string
	for i := range 10000 {
		spec = append(spec, fmt.Sprintf("site%d.example=id%d", i, i))
	}
	z := mustZones(t, strings.Join(spec, ","))
	c := tasks.NewClient(nil, tasks.ClientOptions{Zones: z})
	req, err := c.Build(tasks.PurgeRequest{Files: tasks.URLs("https://www.site9999.example/a", "https://site42.example/b")})
	if err != nil || len(req.Zones["id9999"][purge.Files]) != 1 || len(req.Zones["id42"][purge.Files]) != 1 {
		t.Fatalf("Build: %+v, %v", req, err)
	}
	_, err = c.Build(tasks.PurgeRequest{Files: tasks.URLs("https://elsewhere.example/")})
	if err == nil || !strings.Contains(err.Error(), "(10000 zones)") || len(err.Error()) > 400 {
		t.Errorf("error for a host of no zone: %v", err)
	}
}

func TestBuild(t *testing.T) {
	c := tasks.NewClient(nil, tasks.ClientOptions{Zones: mustZones(t, "example.com=id1,shop.example.com=id2")})
	req, err := c.Build(tasks.PurgeRequest{
		Files:    tasks.URLs("https://WWW.example.com/a", "https://shop.example.com/b#x", "https://www.example.com/a"),
		Hosts:    []string{"shop.example.com"},
		Prefixes: []string{"www.example.com/blog/"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]map[purge.Kind][]string{
		"id1": {purge.Files: {"https://www.example.com/a"}, purge.Prefixes: {"www.example.com/blog/"}},
		"id2": {purge.Files: {"https://shop.example.com/b"}, purge.Hosts: {"shop.example.com"}},
	}
	for zone, kinds := range want {
		for k, items := range kinds {
			if strings.Join(req.Zones[zone][k], ",") != strings.Join(items, ",") {
				t.Errorf("zone %s %s = %q, want %q", zone, k, req.Zones[zone][k], items)
			}
		}
	}
	if req.Total() != 4 {
		t.Errorf("Total = %d", req.Total())
	}

	// Every bad item is named; tags need a zone when several are configured.
	_, err = c.Build(tasks.PurgeRequest{Files: tasks.URLs("https://other.net/x", "nope"), Tags: []string{"t"}, Everything: true})
	var ie *purge.InvalidError
	if !errors.As(err, &ie) || len(ie.Items) != 4 {
		t.Fatalf("err = %v, want 4 invalid items", err)
	}
	reasons := ""
	for _, it := range ie.Items {
		reasons += it.Item + ": " + it.Reason + "\n"
	}
	for _, want := range []string{"https://other.net/x: no configured zone matches host", "nope: not an absolute URL", "t: tags need a zone", "*: everything needs a zone"} {
		if !strings.Contains(reasons, want) {
			t.Errorf("reasons do not contain %q:\n%s", want, reasons)
		}
	}
	if _, err := c.Build(tasks.PurgeRequest{Zone: "unknown.com", Tags: []string{"t"}}); !errors.As(err, &ie) {
		t.Errorf("an unknown zone was accepted: %v", err)
	}
	if _, err := c.Build(tasks.PurgeRequest{}); !errors.As(err, &ie) {
		t.Errorf("an empty request was accepted: %v", err)
	}
	// A single configured zone takes tags and purge-everything.
	single := tasks.NewClient(nil, tasks.ClientOptions{Zones: mustZones(t, "example.com=id1")})
	if req, err := single.Build(tasks.PurgeRequest{Tags: []string{"T"}, Everything: true}); err != nil || req.Zones["id1"][purge.Tags][0] != "t" {
		t.Errorf("single zone: %+v, %v", req, err)
	}
}

func TestEnqueueIdempotency(t *testing.T) {
	rdb := testredis.Connect(t)
	ac := asynq.NewClientFromRedisClient(rdb)
	c := tasks.NewClient(ac, tasks.ClientOptions{Zones: mustZones(t, "example.com=id1")})
	pr := tasks.PurgeRequest{Files: tasks.URLs("https://example.com/a"), IdempotencyKey: "deploy-42"}
	first, err := c.Enqueue(context.Background(), pr)
	if err != nil || first.Duplicate || first.Items != 1 {
		t.Fatalf("first: %+v, %v", first, err)
	}
	second, err := c.Enqueue(context.Background(), pr)
	if err != nil || !second.Duplicate || second.ID != first.ID {
		t.Fatalf("second: %+v, %v; want a duplicate of %s", second, err, first.ID)
	}
	other, _ := c.Enqueue(context.Background(), tasks.PurgeRequest{Files: tasks.URLs("https://example.com/a")})
	if other.ID == first.ID || other.Duplicate {
		t.Errorf("a request without a key was treated as a duplicate: %+v", other)
	}
	info, err := asynq.NewInspectorFromRedisClient(rdb).GetQueueInfo(tasks.QueueRequests)
	if err != nil || info.Pending != 2 {
		t.Errorf("pending = %+v, %v; want 2", info, err)
	}
}

// TestEnqueueRetriedAfterLostReply: an enqueue that finds its id taken by
// itself (the Redis client sent it again after the reply was lost) reports
// the request queued, with or without an idempotency key; another
// invocation with the same key still gets a duplicate.
func TestEnqueueRetriedAfterLostReply(t *testing.T) {
	rdb := testredis.Connect(t)
	testredis.Flush(t, rdb)
	ac := asynq.NewClientFromRedisClient(rdb)
	c := tasks.NewClient(ac, tasks.ClientOptions{Zones: mustZones(t, "example.com=id1"), Redis: rdb})
	for _, key := range []string{"", "deploy-7"} {
		req, err := c.Build(tasks.PurgeRequest{Files: tasks.URLs("https://example.com/a"), IdempotencyKey: key})
		if err != nil {
			t.Fatal(err)
		}
		if rc, err := c.EnqueueBuilt(context.Background(), req); err != nil || rc.Duplicate {
			t.Fatalf("key %q, first: %+v, %v", key, rc, err)
		}
		// what go-redis does when the reply is lost: the same write again
		if rc, err := c.EnqueueBuilt(context.Background(), req); err != nil || rc.Duplicate || rc.ID != req.ID {
			t.Errorf("key %q, the same invocation again: %+v, %v; want queued", key, rc, err)
		}
	}
	other, err := c.Enqueue(context.Background(), tasks.PurgeRequest{Files: tasks.URLs("https://example.com/a"), IdempotencyKey: "deploy-7"})
	if err != nil || !other.Duplicate {
		t.Errorf("another invocation with the key: %+v, %v; want a duplicate", other, err)
	}
}

// TestReplicas: with Replicas set, an enqueue that no replica confirms in
// time says so, and the request is queued all the same (a stream's staged
// chunks too), so enqueueing again with the key is the safe answer.
func TestReplicas(t *testing.T) {
	rdb := testredis.Connect(t)
	testredis.Flush(t, rdb)
	ac := asynq.NewClientFromRedisClient(rdb)
	c := tasks.NewClient(ac, tasks.ClientOptions{Zones: mustZones(t, "example.com=id1"),
		Replicas: 1, ReplicaTimeout: 50 * time.Millisecond, Redis: rdb})
	rc, err := c.Enqueue(context.Background(), tasks.PurgeRequest{Files: tasks.URLs("https://example.com/a")})
	if !errors.Is(err, tasks.ErrNotReplicated) || !strings.Contains(err.Error(), "0 of 1 replicas") || rc.ID == "" {
		t.Fatalf("enqueue with no replica: %+v, %v", rc, err)
	}
	st := c.NewStream(rdb, false, "")
	if err := st.Add(context.Background(), tasks.PurgeRequest{Files: tasks.URLs("https://example.com/b")}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Commit(context.Background()); !errors.Is(err, tasks.ErrNotReplicated) {
		t.Fatalf("commit with no replica: %v", err)
	}
	info, err := asynq.NewInspectorFromRedisClient(rdb).GetQueueInfo(tasks.QueueRequests)
	if err != nil || info.Pending != 2 {
		t.Errorf("pending = %+v, %v; want both requests queued", info, err)
	}
	if keys, _ := rdb.Keys(context.Background(), keyspace.Staging(st.ID(), "*")).Result(); len(keys) != 1 {
		t.Error("the stream's staged chunks were dropped although its request is queued")
	}
}

func TestAttributionDescribed(t *testing.T) {
	c := tasks.NewClient(nil, tasks.ClientOptions{Zones: mustZones(t, "example.com=id1")})
	req, _ := c.Build(tasks.PurgeRequest{Tags: []string{"t"}})
	if req.Producer != "go" {
		t.Errorf("a Go program's request has producer %q, want go", req.Producer)
	}
	req, _ = c.Build(tasks.PurgeRequest{Tags: []string{"t"}, Producer: "cli", Source: "ana@ci-7"})
	payload, _ := json.Marshal(req)
	if got := tasks.Describe(tasks.TypeRequest, payload); !strings.Contains(got, "(from cli, ana@ci-7)") {
		t.Errorf("the UI's description does not say who asked: %s", got)
	}
}

func TestDescribe(t *testing.T) {
	c := tasks.NewClient(nil, tasks.ClientOptions{Zones: mustZones(t, "example.com=id1")})
	req, _ := c.Build(tasks.PurgeRequest{Files: tasks.URLs("https://example.com/1", "https://example.com/2", "https://example.com/3", "https://example.com/4"), Tags: []string{"t"}, Soft: true})
	payload, _ := json.Marshal(req)
	got := tasks.Describe(tasks.TypeRequest, payload)
	for _, want := range []string{"[soft]", "5 items", "zone id1: 4 files (https://example.com/1, https://example.com/2, https://example.com/3, … 1 more)", "1 tags (t)"} {
		if !strings.Contains(got, want) {
			t.Errorf("Describe(request) = %q, lacks %q", got, want)
		}
	}
	call := `{"id":"c1","zone":"id1","kind":"files","items":["{\"url\":\"https://example.com/h\",\"headers\":{\"Origin\":\"x\"}}"],"sources":["r"]}`
	if got := tasks.Describe(tasks.TypeCall, []byte(call)); got != "call c1 — zone id1, 1 files: https://example.com/h" {
		t.Errorf("Describe(call) = %q", got)
	}
	if got := tasks.Describe(tasks.TypeCall, []byte("{")); !strings.Contains(got, "unreadable") {
		t.Errorf("Describe(garbage) = %q", got)
	}
}
