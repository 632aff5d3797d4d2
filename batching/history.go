package batching

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/purgeq/purgeq/internal/keyspace"
	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/tasks"
)

// History owns the purge history: for every accepted call, when, where,
// with Cloudflare's purge id and for which requests (one entry a call);
// and, per item and day, the calls that purged it (a compact index that
// expires with the retention). It answers "was it purged, when, by which
// call, because who asked?" and, for a URL a worker fetched afterwards
// (internal/probe), "did it take at the edge?".
type History struct {
	rdb       redis.UniversalClient
	retention time.Duration
}

// NewHistory returns the history on rdb, kept for retention
// (PURGE_HISTORY_RETENTION).
func NewHistory(rdb redis.UniversalClient, retention time.Duration) *History {
	return &History{rdb: rdb, retention: retention}
}

// historyPerItem bounds the calls an item's index keeps a day (about 8
// bytes each).
const historyPerItem = 50

// historyRequests is the most requests an entry names (a hot item may be
// asked for by thousands).
const historyRequests = 20

// Entry is one purge of an item, as `enqueue history --json` prints it.
type Entry struct {
	// Call is purgeq's id of the call (its asynq task id).
	Call         string         `json:"call"`
	At           time.Time      `json:"at"`
	Account      string         `json:"account"`
	Zone         string         `json:"zone"`
	Kind         purge.Kind     `json:"kind"`
	Soft         bool           `json:"soft"`
	CloudflareID string         `json:"cloudflare_id"`
	Requests     []EntryRequest `json:"requests"`
	// Verification is what a fetch of the item after this purge found
	// (internal/probe); empty when it was not fetched.
	Verification Verification `json:"verification,omitempty"`
}

// Verification is what a fetch of a purged URL found at the edge the
// worker reaches.
type Verification string

// The outcomes of a verification, each kept as one letter after the
// call's number in the item's index.
const (
	// Fresh: not the copy from before the purge (a miss, or a hit cached
	// since).
	Fresh Verification = "fresh"
	// Stale: a hit cached before the purge, not purged again (the item was
	// purged again for a verification recently, or that failed).
	Stale Verification = "stale"
	// Repurged: a hit cached before the purge, and the item was purged
	// once more.
	Repurged Verification = "repurged"
)

// verificationOf reads an index reference's letter.
var verificationOf = map[byte]Verification{'f': Fresh, 's': Stale, 'r': Repurged}

// EntryRequest is a request a purge served.
type EntryRequest struct {
	ID       string `json:"id"`
	Producer string `json:"producer,omitempty"`
	Source   string `json:"source,omitempty"`
	// NotBefore is a delayed request's time (--delay); RepeatOf names the
	// request a --repeat-after request repeats.
	NotBefore *time.Time `json:"not_before,omitempty"`
	RepeatOf  string     `json:"repeat_of,omitempty"`
}

// Remember keeps an accepted call (once; a retried or re-run call adds
// nothing).
func (h *History) Remember(ctx context.Context, c *tasks.Call, account, cloudflareID string) error {
	var ids []string
	for _, s := range c.Sources {
		for _, id := range requestIDs(s) {
			if !slices.Contains(ids, id) && len(ids) < historyRequests {
				ids = append(ids, id)
			}
		}
	}
	e := Entry{Call: c.ID, At: time.Now().UTC().Truncate(time.Millisecond), Account: account, Zone: c.Zone, Kind: c.Kind, Soft: c.Soft, CloudflareID: cloudflareID}
	cmds, metas := make([]*redis.SliceCmd, len(ids)), make([]*redis.SliceCmd, len(ids))
	if _, err := h.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.HMGet(ctx, keyspace.Request(id), "producer", "source")
			metas[i] = p.HMGet(ctx, keyspace.RequestMeta(id), "not_before", "repeat_of")
		}
		return nil
	}); err != nil {
		return err
	}
	for i, id := range ids {
		v, meta := cmds[i].Val(), metas[i].Val()
		r := EntryRequest{ID: id}
		r.Producer, _ = v[0].(string)
		r.Source, _ = v[1].(string)
		if ms, _ := meta[0].(string); ms != "" {
			if n, err := strconv.ParseInt(ms, 10, 64); err == nil && n > 0 {
				at := time.UnixMilli(n).UTC()
				r.NotBefore = &at
			}
		}
		r.RepeatOf, _ = meta[1].(string)
		e.Requests = append(e.Requests, r)
	}
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	args := []any{c.ID, b, h.retention.Milliseconds(), historyPerItem, c.Zone + "|" + string(c.Kind) + "|"}
	for _, it := range c.Items {
		args = append(args, it)
	}
	day := time.Now().Unix() / 86400
	return rememberCmd.Run(ctx, h.rdb, []string{keyspace.History, keyspace.HistoryAt, keyspace.HistoryDay(day), keyspace.HistoryIDs, keyspace.HistorySeq}, args...).Err()
}

// itemDigest is an item's field in the day indexes: 10 bytes of the SHA-1
// of zone|kind|key (remember.lua computes the same).
func itemDigest(zone string, kind purge.Kind, key string) string {
	sum := sha1.Sum([]byte(zone + "|" + string(kind) + "|" + key))
	return string(sum[:10])
}

// verifyCmd records a verification on an item's reference to a call.
//
// KEYS[1] call ids remembered (hash: call id → number), KEYS[2…] the day
// indexes that may hold the reference. ARGV[1] call id, ARGV[2] item
// digest, ARGV[3] the outcome's letter.
// Returns 1 once recorded (again: the letter replaces the one before), 0
// when the history holds no such call or reference (never remembered,
// past the retention, trimmed from a busy item's index).
var verifyCmd = redis.NewScript(`
local seq = redis.call('HGET', KEYS[1], ARGV[1])
if not seq then return 0 end
for i = 2, #KEYS do
  local v = redis.call('HGET', KEYS[i], ARGV[2])
  if v then
    local s, e = string.find(' ' .. v, ' ' .. seq .. '%a? ')
    if s then
      redis.call('HSET', KEYS[i], ARGV[2], v:sub(1, s - 1) .. seq .. ARGV[3] .. ' ' .. v:sub(e))
      return 1
    end
  end
end
return 0
`)

// ErrNotRemembered: the history holds no such purge of the item.
var ErrNotRemembered = errors.New("no such purge in the history")

// SetVerification records what a fetch of item (a canonical key, as in
// c.Items) found after call c, accepted at at, purged it: one letter on
// the item's reference to the call. It returns ErrNotRemembered when the
// history has no such reference.
func (h *History) SetVerification(ctx context.Context, c *tasks.Call, item string, at time.Time, v Verification) error {
	day := at.Unix() / 86400 // Remember ran just before at: that day, or the one before
	keys := []string{keyspace.HistoryIDs, keyspace.HistoryDay(day), keyspace.HistoryDay(day - 1)}
	n, err := verifyCmd.Run(ctx, h.rdb, keys, c.ID, itemDigest(c.Zone, c.Kind, item), string(v[0])).Int()
	switch {
	case err != nil:
		return fmt.Errorf("recording the verification of %s in call %s: %w", item, c.ID, err)
	case n == 0:
		return fmt.Errorf("verification of %s in call %s: %w", item, c.ID, ErrNotRemembered)
	}
	return nil
}

// ClaimRepurge reports whether item of zone id zone may be purged once
// more for a verification: true at most once per window, across workers,
// so that an edge that keeps answering with an old copy costs one extra
// purge a window, never a loop.
func (h *History) ClaimRepurge(ctx context.Context, zone string, kind purge.Kind, item string, window time.Duration) (bool, error) {
	key := keyspace.Prefix + "hist:repurged:" + hex.EncodeToString([]byte(itemDigest(zone, kind, item)))
	ok, err := h.rdb.SetNX(ctx, key, 1, window).Result()
	if err != nil {
		return false, fmt.Errorf("claiming a re-purge of %s: %w", item, err)
	}
	return ok, nil
}

// lookup lists the purges of one item (its canonical key) of a zone id
// and kind, newest first.
func (h *History) lookup(ctx context.Context, zone string, kind purge.Kind, key string) ([]Entry, error) {
	digest := itemDigest(zone, kind, key)
	today := time.Now().Unix() / 86400
	var ids []string
	verified := map[string]Verification{}
	for day := today; day >= today-int64(h.retention/(24*time.Hour))-1; day-- {
		v, err := h.rdb.HGet(ctx, keyspace.HistoryDay(day), digest).Result()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, ref := range strings.Fields(v) {
			if vf, ok := verificationOf[ref[len(ref)-1]]; ok {
				ref = ref[:len(ref)-1]
				verified[ref] = vf
			}
			ids = append(ids, ref)
		}
	}
	if len(ids) == 0 {
		return nil, nil
	}
	vals, err := h.rdb.HMGet(ctx, keyspace.History, ids...).Result()
	if err != nil {
		return nil, err
	}
	var out []Entry
	for i, v := range vals {
		s, ok := v.(string)
		if !ok {
			continue // past the retention
		}
		e := Entry{Verification: verified[ids[i]]}
		if err := json.Unmarshal([]byte(s), &e); err != nil {
			return nil, fmt.Errorf("history entry %s: %w", s, err)
		}
		out = append(out, e)
	}
	return out, nil
}

// Find lists when item was purged, newest first. The item is a URL, a
// tag, a host or a prefix, compared as the queue compares it (URLs by
// their normalised form, tags case-insensitively); zone (name or id)
// narrows it, else a URL's, host's or prefix's hostname picks it and a tag
// is looked up in every zone.
func (h *History) Find(ctx context.Context, zones tasks.Zones, item, zone string) ([]Entry, error) {
	var only *tasks.Zone
	if zone != "" {
		z, ok := zones.Lookup(zone)
		if !ok {
			return nil, &purge.InvalidError{Items: []purge.Invalid{{Item: zone, Reason: "zone is not one of the configured zones (" + zones.String() + ")"}}}
		}
		only = &z
	}
	var out []Entry
	found := false
	for _, kind := range purge.Kinds[:4] {
		var key string
		var err error
		if kind == purge.Files {
			key, err = purge.NormalizeFile(purge.File{URL: item})
		} else {
			key, err = purge.Normalize(kind, item)
		}
		if err != nil {
			continue
		}
		found = true
		candidates := zones
		switch {
		case only != nil:
			candidates = tasks.Zones{*only}
		case kind != purge.Tags:
			host := purge.URLHost(key)
			if kind != purge.Files {
				host, _, _ = strings.Cut(key, "/")
			}
			z, ok := zones.ForHost(host)
			if !ok {
				continue
			}
			candidates = tasks.Zones{z}
		}
		for _, z := range candidates {
			es, err := h.lookup(ctx, z.ID, kind, key)
			if err != nil {
				return nil, err
			}
			for i := range es {
				if z.Name != "" {
					es[i].Zone = z.Name
				}
			}
			out = append(out, es...)
		}
	}
	if !found {
		return nil, &purge.InvalidError{Items: []purge.Invalid{{Item: item, Reason: "neither a URL, a tag, a host nor a prefix"}}}
	}
	slices.SortFunc(out, func(a, b Entry) int { return b.At.Compare(a.At) })
	return out, nil
}
