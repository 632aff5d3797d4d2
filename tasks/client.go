package tasks

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/purgeq/purgeq/internal/keyspace"
	"github.com/purgeq/purgeq/purge"
)

// PurgeRequest is what a producer asks for. Several kinds may be mixed; the
// worker sends one kind per API call.
type PurgeRequest struct {
	// Zone names the zone by name or id. Empty: each URL's, host's or
	// prefix's hostname picks its zone (longest suffix match); tags and
	// purge-everything then need the zone unless only one is configured.
	Zone       string
	Files      []purge.File
	Tags       []string
	Hosts      []string
	Prefixes   []string
	Everything bool
	// Soft asks for invalidation (mark stale) instead of eviction.
	Soft bool
	// IdempotencyKey makes a repeated request (a re-run deploy hook) a
	// no-op that returns the first request's id.
	IdempotencyKey string
	// Producer names who queued the request: "cli", an intake producer's
	// name, or (empty) "go" for a Go program. Source says who or what asked
	// (a user, a commit, a CMS post). Both are recorded with the request and
	// shown in its status, the logs and the UI.
	Producer, Source string
	// Priority is high (an editorial hotfix), normal (empty) or bulk
	// (imports, backfills): when the limits are the bottleneck, high items
	// leave first and bulk ones only take what the others leave.
	Priority string
	// CallbackURL, when set, is POSTed the request's status, signed, once
	// it ends (done or failed): http or https only.
	CallbackURL string
	// Delay holds the items back: none is sent before now + Delay.
	// RepeatAfter purges the same items again, as a new request linked to
	// this one, RepeatAfter after this one is done (its purges accepted).
	// Each is at most MaxDelay.
	Delay, RepeatAfter time.Duration
}

// ItemsRequest is a request of items of one kind (files, tags, hosts or
// prefixes) for zone: one chunk of a streamed list.
func ItemsRequest(kind purge.Kind, zone string, items []string) PurgeRequest {
	pr := PurgeRequest{Zone: zone}
	switch kind {
	case purge.Files:
		pr.Files = URLs(items...)
	case purge.Tags:
		pr.Tags = slices.Clone(items)
	case purge.Hosts:
		pr.Hosts = slices.Clone(items)
	case purge.Prefixes:
		pr.Prefixes = slices.Clone(items)
	}
	return pr
}

// CheckPriority refuses a priority other than high, normal, bulk or empty.
func CheckPriority(p string) error {
	switch p {
	case "", "normal", "high", "bulk":
		return nil
	}
	return fmt.Errorf("priority %q is none of high, normal, bulk", p)
}

// URLs is a convenience for PurgeRequest.Files without headers.
func URLs(urls ...string) []purge.File {
	files := make([]purge.File, len(urls))
	for i, u := range urls {
		files[i] = purge.File{URL: u}
	}
	return files
}

// Receipt is the answer to a durably queued request.
type Receipt struct {
	ID    string `json:"id"`
	Items int    `json:"items"`
	// Duplicate: the idempotency key was seen before; ID is the first
	// request's, and nothing new was queued.
	Duplicate bool `json:"duplicate,omitempty"`
}

// Client is the producer API: every entry point (the enqueue command, the
// HTTP intake, Go programs) queues purges through it.
type Client struct {
	asynq *asynq.Client
	zones Zones
	index Index
	opts  ClientOptions
}

// ClientOptions configure a Client.
type ClientOptions struct {
	// Zones are the configured zones (PURGE_ZONES).
	Zones Zones
	// CheckCallback vets a callback URL beyond its scheme (the allow-list,
	// a signing secret); nil accepts any http(s) URL.
	CheckCallback func(*url.URL) error
	// Retention keeps a processed request task that has an idempotency key,
	// and so the key, this long (others are deleted once admitted, so that
	// Redis does not hold every request's payload). Zero means 24h.
	Retention time.Duration
	// Redis is the client the asynq client writes through. With it, an
	// enqueue whose reply was lost and that the Redis client sent again is
	// recognised as the same request (not reported as a duplicate of an
	// earlier one with the same idempotency key). Replicas needs it too.
	Redis redis.UniversalClient
	// Replicas, when above 0, makes every enqueue wait (Redis WAIT, at
	// most ReplicaTimeout) until that many replicas hold the request, so
	// that a Sentinel failover cannot lose a request its producer was told
	// is queued.
	// Not for Redis Cluster, where WAIT confirms one shard only.
	Replicas       int
	ReplicaTimeout time.Duration
}

// ErrNotReplicated: the request is queued on the master, but fewer replicas
// than ClientOptions.Replicas confirmed it in time, so a failover now could
// lose it. Enqueueing again with the same idempotency key is safe.
var ErrNotReplicated = errors.New("queued, but not yet on enough replicas")

// NewClient returns a Client on the asynq client ac (which it does not close).
func NewClient(ac *asynq.Client, opts ClientOptions) *Client {
	if opts.Retention == 0 {
		opts.Retention = 24 * time.Hour
	}
	if opts.ReplicaTimeout == 0 {
		opts.ReplicaTimeout = time.Second
	}
	return &Client{asynq: ac, zones: opts.Zones, index: opts.Zones.Index(), opts: opts}
}

// keyReplicated is written before WAIT, so that the connection WAIT runs
// on has a write at least as recent as the request (replication is in
// order, so the request is on every replica that has this write).
const keyReplicated = keyspace.Replicated

// replicated waits until opts.Replicas replicas hold what was written so far.
func (c *Client) replicated(ctx context.Context) error {
	if c.opts.Replicas <= 0 {
		return nil
	}
	var wait *redis.Cmd
	_, err := c.opts.Redis.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Incr(ctx, keyReplicated)
		wait = p.Do(ctx, "WAIT", c.opts.Replicas, c.opts.ReplicaTimeout.Milliseconds())
		return nil
	})
	if err != nil {
		return fmt.Errorf("waiting for replicas: %w", err)
	}
	if n, _ := wait.Int(); n < c.opts.Replicas {
		return fmt.Errorf("%w: %d of %d replicas confirmed it within %v", ErrNotReplicated, n, c.opts.Replicas, c.opts.ReplicaTimeout)
	}
	return nil
}

// Enqueue validates every item, resolves zones and queues the request. It
// returns once the request is in Redis. Invalid input yields a
// *purge.InvalidError naming every bad item, and nothing is queued.
func (c *Client) Enqueue(ctx context.Context, pr PurgeRequest) (Receipt, error) {
	req, err := c.Build(pr)
	if err != nil {
		return Receipt{}, err
	}
	return c.EnqueueBuilt(ctx, req)
}

// Build validates and resolves a request without queueing it.
func (c *Client) Build(pr PurgeRequest) (*Request, error) {
	b := builder{zones: c.zones, index: c.index, out: map[string]map[purge.Kind][]string{}, seen: map[string]bool{}}
	if pr.Zone != "" {
		z, ok := c.zones.Lookup(pr.Zone)
		if !ok {
			return nil, &purge.InvalidError{Items: []purge.Invalid{{Item: pr.Zone, Reason: "zone is not one of PURGE_ZONES (" + c.zones.Brief() + ")"}}}
		}
		b.zone = &z
	}
	if pr.Everything {
		b.add(purge.Everything, purge.EverythingKey, purge.EverythingKey, "")
	}
	for _, f := range pr.Files {
		key, err := purge.NormalizeFile(f)
		b.addChecked(purge.Files, f.URL, key, err, func() string { return purge.URLHost(key) })
	}
	for kind, items := range map[purge.Kind][]string{purge.Tags: pr.Tags, purge.Hosts: pr.Hosts, purge.Prefixes: pr.Prefixes} {
		for _, raw := range items {
			key, err := purge.Normalize(kind, raw)
			b.addChecked(kind, raw, key, err, func() string { h, _, _ := strings.Cut(key, "/"); return h })
		}
	}
	if err := CheckPriority(pr.Priority); err != nil {
		b.bad = append(b.bad, purge.Invalid{Item: pr.Priority, Reason: err.Error()})
	}
	req := &Request{ID: requestID(pr.IdempotencyKey), Idempotent: pr.IdempotencyKey != "", Nonce: newID(),
		EnqueuedAt: time.Now().UnixMilli(), Soft: pr.Soft, Zones: b.out, Producer: producerOr(pr.Producer), Source: pr.Source,
		Priority: priorityOf(pr.Priority)}
	b.bad = append(b.bad, c.followups(pr, req)...)
	if len(b.bad) > 0 {
		return nil, &purge.InvalidError{Items: b.bad}
	}
	if len(b.out) == 0 {
		return nil, &purge.InvalidError{Items: []purge.Invalid{{Item: "", Reason: "the request names nothing to purge"}}}
	}
	return req, nil
}

// priorityOf stores normal as empty.
func priorityOf(p string) string {
	if p == "normal" {
		return ""
	}
	return p
}

// producerOr names a Go program as the producer when none is given.
func producerOr(p string) string {
	if p == "" {
		return "go"
	}
	return p
}

// requestID derives the id from an idempotency key, else makes a random one.
func requestID(idempotencyKey string) string {
	if idempotencyKey == "" {
		return newID()
	}
	sum := sha256.Sum256([]byte(idempotencyKey))
	return "k" + hex.EncodeToString(sum[:12])
}

// EnqueueBuilt queues a request made by Build.
func (c *Client) EnqueueBuilt(ctx context.Context, req *Request) (Receipt, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // items read in the UI as they were sent
	if err := enc.Encode(req); err != nil {
		return Receipt{}, err
	}
	payload := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	rc := Receipt{ID: req.ID, Items: req.Total()}
	opts := []asynq.Option{asynq.TaskID(req.ID), asynq.Queue(QueueRequests), asynq.MaxRetry(25)}
	if req.NotBefore > time.Now().UnixMilli() {
		// Held in asynq's schedule, in Redis: a restart loses nothing.
		// asynq keeps whole seconds (truncated), so the task may be due up
		// to a second early: the worker holds it until NotBefore.
		opts = append(opts, asynq.ProcessAt(time.UnixMilli(req.NotBefore)))
	}
	if req.Idempotent {
		opts = append(opts, asynq.Retention(c.opts.Retention))
	}
	_, err := c.asynq.EnqueueContext(ctx, asynq.NewTask(TypeRequest, payload), opts...)
	switch {
	case errors.Is(err, asynq.ErrTaskIDConflict) && req.Idempotent:
		// The id is taken: by this very request when the Redis client sent
		// the enqueue again after its reply was lost, or by an earlier run
		// with the same idempotency key.
		mine, herr := c.holds(ctx, req)
		if herr != nil {
			return Receipt{}, fmt.Errorf("%w: telling a retry from a duplicate: %v", ErrUncertain, herr)
		}
		if !mine {
			rc.Duplicate = true
			return rc, nil
		}
	case errors.Is(err, asynq.ErrTaskIDConflict):
		// a random id is taken only by this request itself
	case err != nil:
		// The write may have run before its reply was lost.
		mine, herr := c.holds(ctx, req)
		switch {
		case herr != nil:
			return Receipt{}, fmt.Errorf("%w: %v", ErrUncertain, err)
		case !mine:
			return Receipt{}, fmt.Errorf("queueing request: %w", err)
		}
	}
	if err := c.replicated(ctx); err != nil {
		return rc, fmt.Errorf("request %s: %w", rc.ID, err)
	}
	return rc, nil
}

// ErrUncertain: the enqueue failed in a way that leaves unknown whether the
// request was queued (Redis stopped answering after the write went out).
// Enqueueing again with the same idempotency key is safe.
var ErrUncertain = errors.New("queueing request: Redis stopped answering; the request may or may not be queued")

// holds reports whether the queue holds req itself: a task with its id
// and its nonce. Without ClientOptions.Redis it cannot tell, and reports
// false. A task already processed and deleted counts as not held.
func (c *Client) holds(ctx context.Context, req *Request) (bool, error) {
	if c.opts.Redis == nil {
		return false, nil
	}
	info, err := asynq.NewInspectorFromRedisClient(c.opts.Redis).GetTaskInfo(QueueRequests, req.ID)
	if errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	queued, err := DecodeRequest(info.Payload)
	if err != nil {
		return false, err
	}
	return queued.Nonce == req.Nonce, nil
}

// builder groups items by zone and kind, collecting every error.
type builder struct {
	zones Zones
	index Index
	zone  *Zone
	out   map[string]map[purge.Kind][]string
	seen  map[string]bool
	bad   []purge.Invalid
}

func (b *builder) addChecked(kind purge.Kind, raw, key string, err error, host func() string) {
	if err != nil {
		b.bad = append(b.bad, purge.Invalid{Item: raw, Reason: err.Error()})
		return
	}
	h := ""
	if kind != purge.Tags {
		h = host()
	}
	b.add(kind, raw, key, h)
}

// add places one valid item in its zone; host is empty for tags and
// purge-everything, which cannot pick a zone by themselves.
func (b *builder) add(kind purge.Kind, raw, key, host string) {
	var zone Zone
	switch {
	case b.zone != nil && host != "" && !b.zone.Holds(host):
		// Cloudflare would accept the call and purge nothing.
		b.bad = append(b.bad, purge.Invalid{Item: raw, Reason: fmt.Sprintf("host %q is not in zone %s (neither the zone's name nor a subdomain of it)", host, b.zone.Name)})
		return
	case b.zone != nil:
		zone = *b.zone
	case host != "":
		z, ok := b.index.ForHost(host)
		if !ok {
			b.bad = append(b.bad, purge.Invalid{Item: raw, Reason: fmt.Sprintf("no configured zone matches host %q (PURGE_ZONES: %s)", host, b.zones.Brief())})
			return
		}
		zone = z
	case len(b.zones) == 1:
		zone = b.zones[0]
	default:
		what := string(kind) + " need"
		if kind == purge.Everything {
			what = "everything needs"
		}
		b.bad = append(b.bad, purge.Invalid{Item: raw, Reason: fmt.Sprintf("%s a zone: name one of %s", what, b.zones.Brief())})
		return
	}
	dedup := zone.ID + "\x00" + string(kind) + "\x00" + key
	if b.seen[dedup] {
		return
	}
	b.seen[dedup] = true
	if b.out[zone.ID] == nil {
		b.out[zone.ID] = map[purge.Kind][]string{}
	}
	b.out[zone.ID][kind] = append(b.out[zone.ID][kind], key)
}

func newID() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
