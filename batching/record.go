package batching

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/tasks"
)

// markers (sent, recorded, first failure) outlive any retry of their call.
const markerTTL = 7 * 24 * time.Hour

// recordCmd records a call's outcome once: it releases the call's window
// slot, credits the requests of its purged items, and stores a dead-letter
// entry per dead item, crediting those as dead. A call recorded before (a
// task re-run after a crash) changes nothing.
//
// KEYS[1] the scope's outstanding calls, KEYS[2] dead-letter hash,
// KEYS[3] dead-letter times, KEYS[4] the call's recorded marker.
// ARGV[1] prefix, ARGV[2] retention ms, ARGV[3] call id, ARGV[4] marker
// TTL ms, ARGV[5] number of purged items p, ARGV[6…5+p] their sources, then
// triples of dead entry id, entry JSON, sources.
// Returns 1, or 0 if the call was recorded before.
var recordCmd = redis.NewScript(luaCredit + `
if not redis.call('SET', KEYS[4], '1', 'NX', 'PX', ARGV[4]) then return 0 end
redis.call('ZREM', KEYS[1], ARGV[3])
local p = tonumber(ARGV[5])
local purged = {}
for i = 6, 5 + p do purged[#purged + 1] = ARGV[i] end
creditSources(purged, 'purged')
local dead = {}
for i = 6 + p, #ARGV, 3 do
  if redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1]) == 1 then
    redis.call('ZADD', KEYS[3], exact(now), ARGV[i])
    dead[#dead + 1] = ARGV[i + 2]
  end
end
creditSources(dead, 'dead')
return 1
`)

// DeadEntry is one dead-lettered item: what, why, and whose it was.
type DeadEntry struct {
	ID       string     `json:"id"`
	Zone     string     `json:"zone"`
	Kind     purge.Kind `json:"kind"`
	Soft     bool       `json:"soft,omitempty"`
	Item     string     `json:"item"`
	Requests []string   `json:"requests"`
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
// those at dead indexes failed for good with f. It returns the dead-letter
// entries it made (empty when the call was recorded before).
func (o *Outbox) Record(ctx context.Context, c *tasks.Call, purged, dead []int, f Failure) ([]DeadEntry, error) {
	args := []any{prefix, o.retention.Milliseconds(), c.ID, markerTTL.Milliseconds(), len(purged)}
	for _, i := range purged {
		args = append(args, c.Sources[i])
	}
	now := time.Now().UnixMilli()
	first := now
	if !f.FirstFailed.IsZero() {
		first = f.FirstFailed.UnixMilli()
	}
	entries := make([]DeadEntry, 0, len(dead))
	for _, i := range dead {
		e := DeadEntry{ID: deadID(c.ID, c.Items[i]), Zone: c.Zone, Kind: c.Kind, Soft: c.Soft, Item: c.Items[i],
			Requests: splitSources(c.Sources[i]), Reason: f.Reason, Code: f.Code, Message: f.Message, Attempts: f.Attempts,
			FirstFailed: first, LastFailed: now}
		b, err := json.Marshal(e)
		if err != nil {
			return nil, err
		}
		entries = append(entries, e)
		args = append(args, e.ID, b, c.Sources[i])
	}
	keys := []string{keyOutstanding(purge.BucketScope(c.Kind), c.Owner), keyDead, keyDeadAt, keyRecorded(c.ID)}
	n, err := recordCmd.Run(ctx, o.rdb, keys, args...).Int()
	if err != nil {
		return nil, fmt.Errorf("recording call %s: %w", c.ID, err)
	}
	if n == 0 {
		return nil, nil
	}
	return entries, nil
}

// deadID is deterministic, so a call recorded twice makes one entry per item.
func deadID(callID, item string) string {
	sum := sha256.Sum256([]byte(callID + "\x00" + item))
	return "d" + hex.EncodeToString(sum[:10])
}

// MarkSent notes that a call is about to reach the API. It reports false
// when an earlier attempt's outcome was unknown (a crash, timeout or reset
// after sending): this send may purge the items twice, and is counted.
func (o *Outbox) MarkSent(ctx context.Context, callID string) (first bool, err error) {
	first, err = o.rdb.SetNX(ctx, keySent(callID), 1, markerTTL).Result()
	if err == nil && !first {
		err = o.rdb.Incr(ctx, keyResent).Err()
	}
	return first, err
}

// Unsent notes that the API answered an attempt with a definite failure, so
// the next attempt is no duplicate.
func (o *Outbox) Unsent(ctx context.Context, callID string) error {
	return o.rdb.Del(ctx, keySent(callID)).Err()
}

// Resent is how many calls were sent again after an attempt with an
// unknown outcome: an upper bound on duplicate purges.
func (o *Outbox) Resent(ctx context.Context) (int64, error) {
	n, err := o.rdb.Get(ctx, keyResent).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	return n, err
}

// FirstFailure returns when a call first failed transiently, noting now
// if this is the first time.
func (o *Outbox) FirstFailure(ctx context.Context, callID string) (time.Time, error) {
	now := time.Now().UnixMilli()
	if err := o.rdb.SetNX(ctx, keyFirstFail(callID), now, markerTTL).Err(); err != nil {
		return time.Time{}, err
	}
	ms, err := o.rdb.Get(ctx, keyFirstFail(callID)).Int64()
	return time.UnixMilli(ms), err
}
