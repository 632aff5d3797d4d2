package batching

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
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

// markerTTL: markers (sent, recorded, first failure) outlive any retry of
// their call; a day is plenty (at 1,000 calls per 5 minutes, 288,000 keys).
const markerTTL = 24 * time.Hour

// DeadEntry is one dead-lettered item: what, why, and whose it was.
type DeadEntry struct {
	ID       string     `json:"id"`
	Zone     string     `json:"zone"`
	Kind     purge.Kind `json:"kind"`
	Soft     bool       `json:"soft,omitempty"`
	Item     string     `json:"item"`
	Requests []string   `json:"requests"`
	// Sources is the item's source list in the call (request ids, and
	// rid~n for items a purge-everything covered): what a retry credits.
	Sources string `json:"sources,omitempty"`
	// Reason says what happened and, for configuration errors, what to fix.
	Reason   string `json:"reason"`
	Code     int    `json:"code,omitempty"`
	Message  string `json:"message,omitempty"`
	Attempts int    `json:"attempts"`
	// FirstFailed and LastFailed are Unix milliseconds.
	FirstFailed int64 `json:"first_failed"`
	LastFailed  int64 `json:"last_failed"`
}

// Failure describes why items are dead.
type Failure struct {
	Reason      string
	Code        int
	Message     string
	Attempts    int
	FirstFailed time.Time
}

// Record stores a call's outcome: the items at purged indexes were purged,
// those at dead indexes failed for good with f, and the calls in resend
// will send the rest again (they are put in flight, and the caller hands
// them to asynq with HandoffAll). It returns the call's dead-letter
// entries, also when the call was recorded before (a retry after a lost
// reply, or a task re-run), so that mirroring them is never skipped.
func (o *Outbox) Record(ctx context.Context, c *tasks.Call, purged, dead []int, f Failure, resend []*tasks.Call) ([]DeadEntry, error) {
	args := []any{prefix, o.retention.Milliseconds(), c.ID, markerTTL.Milliseconds(), len(purged)}
	for _, i := range purged {
		args = append(args, c.Sources[i])
	}
	now := time.Now().UnixMilli()
	first := now
	if !f.FirstFailed.IsZero() {
		first = f.FirstFailed.UnixMilli()
	}
	args = append(args, len(dead))
	entries := make([]DeadEntry, 0, len(dead))
	for _, i := range dead {
		e := DeadEntry{ID: deadID(c.ID, c.Items[i]), Zone: c.Zone, Kind: c.Kind, Soft: c.Soft, Item: c.Items[i],
			Requests: requestIDs(c.Sources[i]), Sources: c.Sources[i], Reason: f.Reason, Code: f.Code, Message: f.Message,
			Attempts: f.Attempts, FirstFailed: first, LastFailed: now}
		b, err := json.Marshal(e)
		if err != nil {
			return nil, err
		}
		entries = append(entries, e)
		args = append(args, e.ID, b, c.Sources[i])
	}
	for _, sub := range resend {
		b, err := json.Marshal(sub)
		if err != nil {
			return nil, err
		}
		args = append(args, sub.ID, b)
	}
	keys := []string{keyspace.Outstanding(string(purge.BucketScope(c.Kind)), c.Owner), keyspace.Dead, keyspace.DeadAt, keyspace.Recorded(c.ID), keyspace.Inflight, keyspace.InflightAt}
	if err := recordCmd.Run(ctx, o.rdb, keys, args...).Err(); err != nil {
		return nil, fmt.Errorf("recording call %s: %w", c.ID, err)
	}
	return entries, nil
}

// Recorded reports whether a call's outcome was recorded, and returns the
// dead-letter entries it made that are still in the queue: a task re-run
// after a crash then skips the API call and only finishes what the first
// run may not have (mirroring its entries, handing off its re-sent parts).
func (o *Outbox) Recorded(ctx context.Context, callID string) (bool, []DeadEntry, error) {
	v, err := o.rdb.Get(ctx, keyspace.Recorded(callID)).Result()
	if errors.Is(err, redis.Nil) {
		return false, nil, nil
	}
	if err != nil {
		return false, nil, err
	}
	ids, _ := strings.CutPrefix(v, "+")
	entries, err := deadByID(ctx, o.rdb, strings.Fields(ids))
	return true, entries, err
}

// deadID is deterministic, so a call recorded twice makes one entry per item.
func deadID(callID, item string) string {
	sum := sha256.Sum256([]byte(callID + "\x00" + item))
	return "d" + hex.EncodeToString(sum[:10])
}

// requestIDs lists the distinct requests a source list names.
func requestIDs(sources string) []string {
	var ids []string
	for _, tok := range strings.Fields(sources) {
		id, _, _ := strings.Cut(tok, "~")
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	return ids
}

// MarkSent notes that attempt (a token unique to one run of the call's
// task) is about to send the call. It reports false when an earlier
// attempt's outcome was unknown (a crash, timeout or reset after sending):
// this send may purge the items twice, and is counted.
func (o *Outbox) MarkSent(ctx context.Context, callID, attempt string) (first bool, err error) {
	n, err := markSentCmd.Run(ctx, o.rdb, []string{keyspace.Sent(callID), keyspace.Resent}, attempt, markerTTL.Milliseconds()).Int()
	return n == 1, err
}

// Unsent notes that the API answered an attempt with a definite failure, so
// the next attempt is no duplicate.
func (o *Outbox) Unsent(ctx context.Context, callID string) error {
	return o.rdb.Del(ctx, keyspace.Sent(callID)).Err()
}

// Resent is how many calls were sent again after an attempt with an
// unknown outcome: an upper bound on duplicate purges.
func (o *Outbox) Resent(ctx context.Context) (int64, error) {
	n, err := o.rdb.Get(ctx, keyspace.Resent).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	return n, err
}

// FirstFailure returns when a call first failed transiently, noting now
// if this is the first time.
func (o *Outbox) FirstFailure(ctx context.Context, callID string) (time.Time, error) {
	now := time.Now().UnixMilli()
	if err := o.rdb.SetNX(ctx, keyspace.FirstFail(callID), now, markerTTL).Err(); err != nil {
		return time.Time{}, err
	}
	ms, err := o.rdb.Get(ctx, keyspace.FirstFail(callID)).Int64()
	return time.UnixMilli(ms), err
}
