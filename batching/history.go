package batching

import (
	"context"
	"crypto/sha1"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
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
// call, because who asked?".
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
}

// EntryRequest is a request a purge served.
type EntryRequest struct {
	ID       string `json:"id"`
	Producer string `json:"producer,omitempty"`
	Source   string `json:"source,omitempty"`
}

// Remember keeps an accepted call (once; a retried or re-run call adds
// nothing).
func (h *History) Remember(ctx context.Context, c *tasks.Call, cloudflareID string) error {
	var ids []string
	for _, s := range c.Sources {
		for _, id := range requestIDs(s) {
			if !slices.Contains(ids, id) && len(ids) < historyRequests {
				ids = append(ids, id)
			}
		}
	}
	e := Entry{Call: c.ID, At: time.Now().UTC().Truncate(time.Millisecond), Account: "default", Zone: c.Zone, Kind: c.Kind, Soft: c.Soft, CloudflareID: cloudflareID}
	cmds := make([]*redis.SliceCmd, len(ids))
	if _, err := h.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.HMGet(ctx, keyspace.Request(id), "producer", "source")
		}
		return nil
	}); err != nil {
		return err
	}
	for i, id := range ids {
		v := cmds[i].Val()
		r := EntryRequest{ID: id}
		r.Producer, _ = v[0].(string)
		r.Source, _ = v[1].(string)
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

// lookup lists the purges of one item (its canonical key) of a zone id
// and kind, newest first.
func (h *History) lookup(ctx context.Context, zone string, kind purge.Kind, key string) ([]Entry, error) {
	sum := sha1.Sum([]byte(zone + "|" + string(kind) + "|" + key))
	digest := string(sum[:10])
	today := time.Now().Unix() / 86400
	var ids []string
	for day := today; day >= today-int64(h.retention/(24*time.Hour))-1; day-- {
		v, err := h.rdb.HGet(ctx, keyspace.HistoryDay(day), digest).Result()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			return nil, err
		}
		ids = append(ids, strings.Fields(v)...)
	}
	if len(ids) == 0 {
		return nil, nil
	}
	vals, err := h.rdb.HMGet(ctx, keyspace.History, ids...).Result()
	if err != nil {
		return nil, err
	}
	var out []Entry
	for _, v := range vals {
		s, ok := v.(string)
		if !ok {
			continue // past the retention
		}
		var e Entry
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
