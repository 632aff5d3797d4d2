package batching

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/redis/go-redis/v9"

	"github.com/purgeq/purgeq/internal/keyspace"
)

// The dead-letter store keeps every entry until an operator retries or
// drops it: a hash of entries by id and a sorted set of ids by time. Unlike
// asynq's archive, which trims past 10,000 tasks a queue, it never drops an
// entry by itself.

// DeadLetters owns the dead-letter queue.
type DeadLetters struct {
	rdb redis.UniversalClient
}

// NewDeadLetters returns the dead-letter queue on rdb.
func NewDeadLetters(rdb redis.UniversalClient) *DeadLetters { return &DeadLetters{rdb: rdb} }

// Count is the number of dead-letter entries.
func (o *DeadLetters) Count(ctx context.Context) (int64, error) {
	return o.rdb.HLen(ctx, keyspace.Dead).Result()
}

// Entries lists dead-letter entries, oldest first; zone, if set, keeps only
// that zone's.
func (o *DeadLetters) Entries(ctx context.Context, zone string) ([]DeadEntry, error) {
	ids, err := o.rdb.ZRange(ctx, keyspace.DeadAt, 0, -1).Result()
	if err != nil {
		return nil, err
	}
	entries, err := deadByID(ctx, o.rdb, ids)
	if zone == "" || err != nil {
		return entries, err
	}
	return slices.DeleteFunc(entries, func(e DeadEntry) bool { return e.Zone != zone }), nil
}

// deadByID reads the entries with the given ids; ids no longer in the
// queue are skipped.
func deadByID(ctx context.Context, rdb redis.UniversalClient, ids []string) ([]DeadEntry, error) {
	var out []DeadEntry
	for start := 0; start < len(ids); start += 1000 {
		vals, err := rdb.HMGet(ctx, keyspace.Dead, ids[start:min(start+1000, len(ids))]...).Result()
		if err != nil {
			return nil, err
		}
		for _, v := range vals {
			s, ok := v.(string)
			if !ok {
				continue // dropped or retried meanwhile
			}
			var e DeadEntry
			if err := json.Unmarshal([]byte(s), &e); err != nil {
				return nil, fmt.Errorf("dead-letter entry %s: %w", s, err)
			}
			out = append(out, e)
		}
	}
	return out, nil
}

// IDs lists every dead-letter entry id, oldest first.
func (o *DeadLetters) IDs(ctx context.Context) ([]string, error) {
	return o.rdb.ZRange(ctx, keyspace.DeadAt, 0, -1).Result()
}

// Retry re-admits the entries' items; unknown ids are skipped.
func (o *DeadLetters) Retry(ctx context.Context, ids []string) (int, error) {
	return inChunks(ids, func(chunk []string) (int, error) {
		args := append([]any{prefix}, toAny(chunk)...)
		return retryCmd.Run(ctx, o.rdb, []string{keyspace.Dead, keyspace.DeadAt, keyspace.Lanes}, args...).Int()
	})
}

// Drop deletes entries; unknown ids are skipped.
func (o *DeadLetters) Drop(ctx context.Context, ids []string) (int, error) {
	return inChunks(ids, func(chunk []string) (int, error) {
		var n *redis.IntCmd
		_, err := o.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
			n = p.HDel(ctx, keyspace.Dead, chunk...)
			p.ZRem(ctx, keyspace.DeadAt, toAny(chunk)...)
			return nil
		})
		return int(n.Val()), err
	})
}

func inChunks(ids []string, f func([]string) (int, error)) (int, error) {
	total := 0
	for start := 0; start < len(ids); start += 500 {
		n, err := f(ids[start:min(start+500, len(ids))])
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

func toAny(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}
