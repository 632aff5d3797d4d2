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

	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/tasks"
)

// markerTTL: markers (sent, recorded, first failure) outlive any retry of
// their call; a day is plenty (at 1,000 calls per 5 minutes, 288,000 keys).
const markerTTL = 24 * time.Hour

// recordCmd records a call's outcome once: it releases the call's window
// slot, credits the requests of its purged items, stores a dead-letter
// entry per dead item, crediting those as dead, and puts the calls that
// send the rest again in flight (the dispatcher's reaper hands them to
// asynq if the caller cannot). The recorded marker keeps the ids of the
// dead entries, so that a task re-run after a crash can mirror them.
// Recording a call again (a task re-run, or a retry after a lost reply)
// changes nothing.
//
// KEYS[1] the scope's outstanding calls, KEYS[2] dead-letter hash,
// KEYS[3] dead-letter times, KEYS[4] the call's recorded marker, KEYS[5]
// in-flight hash, KEYS[6] in-flight times.
// ARGV[1] prefix, ARGV[2] retention ms, ARGV[3] call id, ARGV[4] marker
// TTL ms, ARGV[5] number of purged items p, ARGV[6…5+p] their sources,
// then the number of dead items d and d triples of dead entry id, entry
// JSON, sources, then pairs of re-sent call id and payload.
// Returns 1, or 0 if the call was recorded before.
var recordCmd = redis.NewScript(luaCredit + `
if redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
redis.call('ZREM', KEYS[1], ARGV[3])
local p = tonumber(ARGV[5])
local purged = {}
for i = 6, 5 + p do purged[#purged + 1] = ARGV[i] end
creditSources(purged, 'purged')
local d = tonumber(ARGV[6 + p])
local dead, ids = {}, {}
local i = 7 + p
for _ = 1, d do
  if redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1]) == 1 then
    redis.call('ZADD', KEYS[3], exact(now), ARGV[i])
    dead[#dead + 1] = ARGV[i + 2]
  end
  ids[#ids + 1] = ARGV[i]
  i = i + 3
end
creditSources(dead, 'dead')
for j = i, #ARGV, 2 do
  redis.call('HSET', KEYS[5], ARGV[j], ARGV[j + 1])
  redis.call('ZADD', KEYS[6], exact(now), ARGV[j])
end
redis.call('SET', KEYS[4], '+' .. table.concat(ids, ' '), 'PX', ARGV[4])
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
	keys := []string{keyOutstanding(purge.BucketScope(c.Kind), c.Owner), keyDead, keyDeadAt, keyRecorded(c.ID), keyInflight, keyInflightAt}
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
	v, err := o.rdb.Get(ctx, keyRecorded(callID)).Result()
	if errors.Is(err, redis.Nil) {
		return false, nil, nil
	}
	if err != nil {
		return false, nil, err
	}
	ids, _ := strings.CutPrefix(v, "+")
	entries, err := o.deadByID(ctx, strings.Fields(ids))
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

// markSentCmd notes that an attempt of a call is about to reach the API.
// The marker names the attempt, so that the same attempt retrying after a
// lost reply finds its own marker (and the answer it had) instead of
// counting itself as a re-send.
//
// KEYS[1] the call's sent marker, KEYS[2] the re-sent counter.
// ARGV[1] the attempt's token, ARGV[2] marker TTL ms.
// Returns 1 for a first send, 0 for a re-send after an attempt whose
// outcome is unknown.
var markSentCmd = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v then
  local tok, first = string.match(v, '^(.-) (%d)$')
  if tok == ARGV[1] then return tonumber(first) end
end
local first = 1
if v then
  first = 0
  redis.call('INCR', KEYS[2])
end
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. first, 'PX', ARGV[2])
return first
`)

// MarkSent notes that attempt (a token unique to one run of the call's
// task) is about to send the call. It reports false when an earlier
// attempt's outcome was unknown (a crash, timeout or reset after sending):
// this send may purge the items twice, and is counted.
func (o *Outbox) MarkSent(ctx context.Context, callID, attempt string) (first bool, err error) {
	n, err := markSentCmd.Run(ctx, o.rdb, []string{keySent(callID), keyResent}, attempt, markerTTL.Milliseconds()).Int()
	return n == 1, err
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
