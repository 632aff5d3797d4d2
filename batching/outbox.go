package batching

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/tasks"
)

// prefix starts every outbox key; {purgeq} is the Cluster hash tag.
const prefix = "purgeq:{purgeq}:"

// requestIdleMs (7 days) is how long a request's status outlives its last
// progress when it never finishes (a request whose items were dropped from
// the dead-letter queue, say).
const requestIdleMs = "604800000"

// admitSlice is the most items one admission script takes: a request of
// 200,000 tags is admitted in 200 short scripts, so that Redis keeps
// answering everyone else meanwhile.
const admitSlice = 1000

var (
	keyLanes      = prefix + "lanes"
	keyInflight   = prefix + "inflight"
	keyInflightAt = prefix + "inflight:at"
	keyDead       = prefix + "dlq"
	keyDeadAt     = prefix + "dlq:at"
	keyResent     = prefix + "stats:resent"
	keySent       = func(callID string) string { return prefix + "sent:" + callID }
	keyRecorded   = func(callID string) string { return prefix + "recorded:" + callID }
	keyFirstFail  = func(callID string) string { return prefix + "firstfail:" + callID }
	// keyOutstanding holds one dispatcher's outstanding calls of a scope:
	// the window is kept per dispatcher, so that the calls of a worker that
	// died (recovered by asynq only after its lease) block no one else.
	keyOutstanding = func(s purge.Scope, owner string) string { return prefix + "outstanding:" + string(s) + ":" + owner }
	keyRequest     = func(id string) string { return prefix + "req:" + id }
)

// Lane is one zone, kind and soft/hard combination: the unit of coalescing.
type Lane struct {
	Zone string
	Kind purge.Kind
	Soft bool
}

func (l Lane) id() string {
	soft := "0"
	if l.Soft {
		soft = "1"
	}
	return l.Zone + "|" + string(l.Kind) + "|" + soft
}

func parseLane(s string) (Lane, bool) {
	parts := strings.Split(s, "|")
	if len(parts) != 3 {
		return Lane{}, false
	}
	return Lane{Zone: parts[0], Kind: purge.Kind(parts[1]), Soft: parts[2] == "1"}, true
}

// Scope is the purge bucket the lane's calls draw on.
func (l Lane) Scope() purge.Scope { return purge.BucketScope(l.Kind) }

// Outbox is the Redis state of waiting, in-flight and finished items.
type Outbox struct {
	rdb redis.UniversalClient
	// retention keeps a finished request's status this long.
	retention time.Duration
}

// NewOutbox returns an Outbox on rdb.
func NewOutbox(rdb redis.UniversalClient, retention time.Duration) *Outbox {
	return &Outbox{rdb: rdb, retention: retention}
}

// luaClock starts every script that needs the time: now (server ms) and
// exact(), which writes numbers whole (Lua's tostring keeps 14 digits).
const luaClock = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function exact(x) return string.format('%.0f', x) end
`

// luaCredit is shared by the scripts that credit requests. ARGV[1] is the
// key prefix, ARGV[2] the retention of finished requests (ms).
//
// A call's source list names, per item, the requests it is for: a token is
// a request id (one item of that request), or rid~n: n items of that
// request that a purge-everything covers, carried by the everything item
// so that they are credited (as superseded) only when that call is
// accepted, and dead-lettered with it.
const luaCredit = luaClock + luaSources + `
local P = ARGV[1]
-- requestIdle: a request that makes no progress for this long expires
-- (finished ones expire after the retention).
local requestIdle = ` + requestIdleMs + `
-- credit adds n to a request's counter and, once every item is accounted
-- for, marks it finished and lets it expire after the retention (ARGV[2]).
local function credit(rid, field, n)
  local k = P .. 'req:' .. rid
  if redis.call('EXISTS', k) == 0 then return end
  redis.call('HINCRBY', k, field, n)
  local v = redis.call('HMGET', k, 'total', 'purged', 'dead', 'superseded', 'pending')
  -- pending counts the chunks of a large request not yet admitted.
  if (tonumber(v[5]) or 0) == 0 and (tonumber(v[2]) or 0) + (tonumber(v[3]) or 0) + (tonumber(v[4]) or 0) >= (tonumber(v[1]) or 0) then
    redis.call('HSET', k, 'finished', exact(now))
    redis.call('PEXPIRE', k, ARGV[2])
  else
    redis.call('PEXPIRE', k, requestIdle)
  end
end
-- creditSources credits every token of a list of source lists: field for
-- request ids, superseded for rid~n when field is purged (else field).
local function creditSources(sources, field)
  local counts = {}
  for _, s in ipairs(sources) do
    for tok in string.gmatch(s, '%S+') do
      local rid, n, sup = parseSource(tok)
      local f = field
      if sup and field == 'purged' then f = 'superseded' end
      local k = f .. ' ' .. rid
      counts[k] = (counts[k] or 0) + n
    end
  end
  for k, n in pairs(counts) do
    local f, rid = string.match(k, '^(%S+) (.*)$')
    credit(rid, f, n)
  end
end
`

// luaSources reads one token of a source list: request id, item count,
// and whether the items are covered by a purge-everything.
const luaSources = `
local function parseSource(tok)
  local rid, n = string.match(tok, '^(.-)~(%d+)$')
  if rid then return rid, tonumber(n), true end
  return tok, 1, false
end
`

// luaLanes holds what the scripts that add to or take from lanes share
// (it needs luaClock before it). A lane is four keys, and a list for each
// item asked for again while it waits:
//
//   - lane:<id>, a list of the waiting items in admission order;
//   - has:<id>, a set of their SHA-1 digests (20 bytes), so that an item
//     waiting twice is stored once;
//   - grp:<id>, a hash from admission number to "ms count rid…" (when the
//     admission's count items were admitted, and for which requests), with
//     head (the admission of the list's first item) and taken (how many of
//     head's items already left) and the counter n;
//   - dup:<id>, a set of the digests of the items asked for again while
//     they waited, and for each again:<id>:<digest>, a list of the
//     requests that asked again (appending is O(1), however hot the item).
//
// An item costs its list entry and its digest; the rest is shared by its
// admission. (A sorted set scored by admission costs about 100 bytes an
// item more than the item; this layout about 80.)
const luaLanes = `
local function laneKeys(P, lane)
  return P .. 'lane:' .. lane, P .. 'has:' .. lane, P .. 'grp:' .. lane, P .. 'dup:' .. lane
end
local function againKey(P, lane, d) return P .. 'again:' .. lane .. ':' .. d end
local function hexByte(x) return string.char(tonumber(x, 16)) end
local function digest(item) return (string.gsub(redis.sha1hex(item), '..', hexByte)) end
local function forgetLane(P, lane, lanesKey)
  redis.call('DEL', laneKeys(P, lane))
  redis.call('SREM', lanesKey, lane)
end
-- admitInto adds items[from..to] to a lane for the requests in src
-- (space-separated) and returns how many were not waiting already.
local function admitInto(P, lane, src, items, from, to)
  local lk, hk, gk, dk = laneKeys(P, lane)
  local fresh = {}
  for j = from, to do
    local d = digest(items[j])
    if redis.call('SADD', hk, d) == 1 then
      fresh[#fresh + 1] = items[j]
    else
      redis.call('SADD', dk, d)
      redis.call('RPUSH', againKey(P, lane, d), src)
    end
  end
  if #fresh == 0 then return 0 end
  for j = 1, #fresh, 1000 do
    redis.call('RPUSH', lk, unpack(fresh, j, math.min(j + 999, #fresh)))
  end
  local seq = redis.call('HINCRBY', gk, 'n', 1)
  redis.call('HSETNX', gk, 'head', seq)
  redis.call('HSET', gk, seq, exact(now) .. ' ' .. #fresh .. ' ' .. src)
  return #fresh
end
-- admission reads an admission's record: ms, count, requests.
local function admission(gk, seq)
  local ms, count, src = string.match(redis.call('HGET', gk, exact(seq)) or '', '^(%d+) (%d+) ?(.-)%s*$')
  -- a missing record (never expected) ends the walk instead of looping
  if not ms then return now, math.huge, '' end
  return tonumber(ms), tonumber(count), src
end
-- oldestAt is when the lane's first item was admitted (ms).
local function oldestAt(gk)
  local ms = admission(gk, tonumber(redis.call('HGET', gk, 'head')) or 0)
  return ms
end
-- take accounts for items that left the head of a lane (popped or
-- superseded): it returns their requests and moves the head past them.
local function take(P, lane, items)
  local _, hk, gk, dk = laneKeys(P, lane)
  local seq = tonumber(redis.call('HGET', gk, 'head')) or 1
  local taken = tonumber(redis.call('HGET', gk, 'taken')) or 0
  local _, count, src = admission(gk, seq)
  local dups = redis.call('EXISTS', dk) == 1
  local sources = {}
  for j, item in ipairs(items) do
    while taken >= count do
      redis.call('HDEL', gk, exact(seq))
      seq, taken = seq + 1, 0
      _, count, src = admission(gk, seq)
    end
    taken = taken + 1
    local s, d = src, digest(item)
    if dups and redis.call('SREM', dk, d) == 1 then
      local ak = againKey(P, lane, d)
      s = s .. ' ' .. table.concat(redis.call('LRANGE', ak, 0, -1), ' ')
      redis.call('DEL', ak)
    end
    sources[j] = s
    redis.call('SREM', hk, d)
  end
  if taken >= count then
    redis.call('HDEL', gk, exact(seq))
    seq, taken = seq + 1, 0
  end
  redis.call('HSET', gk, 'head', exact(seq), 'taken', taken)
  return sources
end
`

// admitCmd puts one slice of a chunk of a request's items into their lanes
// (a request has one chunk unless it was streamed; a chunk is admitted in
// slices of at most admitSlice items).
//
// KEYS[1] lanes set. ARGV[1] key prefix, ARGV[2] retention ms, ARGV[3]
// request id, ARGV[4] enqueued-at ms (kept in the status), ARGV[5] soft
// "0"|"1", ARGV[6] the slice's item count, ARGV[7] chunk index, ARGV[8]
// chunk count, ARGV[9] slice index, ARGV[10] "1" if it is the chunk's last
// slice, then groups: zone, kind, n, n items (a zone's everything group
// first).
// Returns 1, or 0 if the slice was admitted before (a retried task).
var admitCmd = redis.NewScript(luaCredit + luaLanes + `
local rid, soft = ARGV[3], ARGV[5]
-- Items are aged by admission, not by the producer's clock: when
-- admission lags behind a burst, items must not arrive already "ready"
-- and leave in partial chunks.
local reqk = P .. 'req:' .. rid
-- mark counts the chunk's slices admitted so far (slices go in order);
-- chunk:<i> is what versions before slicing wrote for a whole chunk.
local mark, slice = 'slices:' .. ARGV[7], tonumber(ARGV[9])
if (tonumber(redis.call('HGET', reqk, mark)) or 0) > slice then return 0 end
if redis.call('HEXISTS', reqk, 'chunk:' .. ARGV[7]) == 1 then return 0 end
if redis.call('EXISTS', reqk) == 0 then
  redis.call('HSET', reqk, 'total', 0, 'purged', 0, 'dead', 0, 'superseded', 0, 'created', ARGV[4], 'soft', soft, 'pending', ARGV[8])
end
redis.call('HINCRBY', reqk, 'total', ARGV[6])
if ARGV[10] == '1' then redis.call('HINCRBY', reqk, 'pending', -1) end
redis.call('HSET', reqk, mark, slice + 1)

local kinds = {'files', 'tags', 'hosts', 'prefixes', 'everything'}
local function laneOf(zone, kind, s) return zone .. '|' .. kind .. '|' .. s end
-- covers: a hard purge-everything covers hard and soft items; a soft one
-- only soft items.
local function covers(everythingSoft, itemSoft) return everythingSoft == '0' or itemSoft == '1' end
local function waiting(lane) return redis.call('EXISTS', P .. 'lane:' .. lane) == 1 end
-- drain empties a lane a purge-everything covers; its items' requests
-- are added to counts, to ride with the everything item.
local function drain(lane, counts)
  local items = redis.call('LRANGE', P .. 'lane:' .. lane, 0, -1)
  if #items == 0 then return end
  for _, s in ipairs(take(P, lane, items)) do
    for tok in string.gmatch(s, '%S+') do
      local r, n = parseSource(tok)
      counts[r] = (counts[r] or 0) + n
    end
  end
  forgetLane(P, lane, KEYS[1])
end
local function covered(r, n)
  if n == 0 then return '' end
  return ' ' .. r .. '~' .. n
end

local i = 11
while i <= #ARGV do
  local zone, kind, n = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  i = i + 3
  local own = laneOf(zone, kind, soft)
  -- the waiting purge-everything that covers these items, if any
  local cover
  for _, es in ipairs({'0', '1'}) do
    local e = laneOf(zone, 'everything', es)
    if not cover and e ~= own and covers(es, soft) and waiting(e) then cover = e end
  end
  if cover then
    -- the items are credited when the everything call is accepted
    admitInto(P, cover, rid .. '~' .. n, {'*'}, 1, 1)
  else
    local src = rid
    if kind == 'everything' then
      local counts = {}
      for _, k in ipairs(kinds) do
        for _, s in ipairs({'0', '1'}) do
          local l = laneOf(zone, k, s)
          if l ~= own and covers(soft, s) then drain(l, counts) end
        end
      end
      for r, c in pairs(counts) do src = src .. covered(r, c) end
    end
    admitInto(P, own, src, ARGV, i, i + n - 1)
    redis.call('SADD', KEYS[1], own)
  end
  i = i + n
end
-- crediting (even of nothing) finishes a request whose items are all
-- accounted for once its last chunk is in
credit(rid, 'superseded', 0)
return 1
`)

// Admit puts chunk i of n of a request into the outbox (0 of 1 for a
// request that was not streamed), in slices of at most admitSlice items.
// Admitting a chunk twice (a retried task) changes nothing the second
// time; a task that stopped half-way goes on with the next slice.
func (o *Outbox) Admit(ctx context.Context, r *tasks.Request, chunk, chunks int) error {
	soft := "0"
	if r.Soft {
		soft = "1"
	}
	// groups in order: a zone's purge-everything first, so that the zone's
	// other items see it.
	type group struct {
		zone  string
		kind  purge.Kind
		items []string
	}
	var groups []group
	// zones in a fixed order: a retried task cuts the same slices
	for _, zone := range slices.Sorted(maps.Keys(r.Zones)) {
		kinds := r.Zones[zone]
		for _, k := range append([]purge.Kind{purge.Everything}, purge.Kinds[:4]...) {
			if len(kinds[k]) > 0 {
				groups = append(groups, group{zone, k, kinds[k]})
			}
		}
	}
	slice, n := 0, 0
	args := []any{}
	flush := func(last bool) error {
		head := []any{prefix, o.retention.Milliseconds(), r.ID, r.EnqueuedAt, soft, n, chunk, chunks, slice, flag(last)}
		if err := admitCmd.Run(ctx, o.rdb, []string{keyLanes}, append(head, args...)...).Err(); err != nil {
			return fmt.Errorf("admitting request %s: %w", r.ID, err)
		}
		slice, n, args = slice+1, 0, args[:0]
		return nil
	}
	for _, g := range groups {
		for start := 0; start < len(g.items); {
			if n == admitSlice {
				if err := flush(false); err != nil {
					return err
				}
			}
			end := min(len(g.items), start+admitSlice-n)
			args = append(args, g.zone, string(g.kind), end-start)
			for _, it := range g.items[start:end] {
				args = append(args, it)
			}
			n += end - start
			start = end
		}
	}
	return flush(true)
}

// popCmd takes the next chunk from a lane if the rules allow it.
//
// KEYS[1] lanes set, KEYS[2] in-flight hash, KEYS[3] in-flight times,
// KEYS[4] the scope's outstanding calls.
// ARGV[1] prefix, ARGV[2] lane id, ARGV[3] cap, ARGV[4] batch wait ms,
// ARGV[5] "1" to allow a partial chunk, ARGV[6] window (most outstanding
// calls), ARGV[7] lease ms, ARGV[8] call id, ARGV[9] zone, ARGV[10] kind,
// ARGV[11] soft "0"|"1", ARGV[12] the dispatcher's id, ARGV[13] "1" to pop a
// full chunk before its oldest item has waited.
// Returns {status, value, server ms}: status 1 popped (value: the call
// payload), 0 window full, -1 lane empty, -2 partial chunk not ready (value:
// ms when it will be; also a full chunk unless ARGV[13] is "1"), -3 partial
// chunk ready (value: its size) but not allowed.
var popCmd = redis.NewScript(luaClock + luaLanes + `
-- The client retries a script whose reply a dropped connection lost; the
-- retry must return the chunk the first run popped, not pop another one
-- under the same call id (which would overwrite, and lose, the first).
local prev = redis.call('HGET', KEYS[2], ARGV[8])
if prev then return {1, prev, now} end
local P, lane, cap, wait = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', exact(now - tonumber(ARGV[7])))
if redis.call('ZCARD', KEYS[4]) >= tonumber(ARGV[6]) then return {0, '', now} end
local lk, _, gk = laneKeys(P, lane)
local n = redis.call('LLEN', lk)
if n == 0 then
  forgetLane(P, lane, KEYS[1])
  return {-1, '', now}
end
local oldest = oldestAt(gk)
if n < cap or ARGV[13] ~= '1' then
  local readyAt = oldest + wait
  if readyAt > now then return {-2, exact(readyAt), now} end
  if n < cap and ARGV[5] ~= '1' then return {-3, tostring(n), now} end
end
local items = redis.call('LPOP', lk, cap)
local sources = take(P, lane, items)
if n <= cap then forgetLane(P, lane, KEYS[1]) end
local rec = cjson.encode({id = ARGV[8], zone = ARGV[9], kind = ARGV[10], soft = ARGV[11] == '1',
  items = items, sources = sources, oldest = oldest, owner = ARGV[12]})
redis.call('HSET', KEYS[2], ARGV[8], rec)
redis.call('ZADD', KEYS[3], exact(now), ARGV[8])
redis.call('ZADD', KEYS[4], exact(now), ARGV[8])
-- a dispatcher that is gone (a restarted worker) leaves no set behind
redis.call('PEXPIRE', KEYS[4], ARGV[7])
return {1, rec, now}
`)

// PopStatus says what a pop attempt found.
type PopStatus int

// Outcomes of Pop.
const (
	Popped PopStatus = iota + 1
	WindowFull
	LaneEmpty
	NotReady     // a chunk whose oldest item has not waited long enough
	PartialReady // a partial chunk that may go if the limits allow it
)

// PopRequest is one pop attempt.
type PopRequest struct {
	Lane         Lane
	Cap          int
	Wait         time.Duration
	AllowPartial bool
	// Eager pops a full chunk at once; otherwise a full chunk too waits
	// until its oldest item has waited Wait, so that items requested
	// again meanwhile go out once.
	Eager  bool
	Window int
	Lease  time.Duration
	// Owner identifies the dispatcher whose window the call counts in.
	Owner string
}

// PopResult is the outcome of Pop.
type PopResult struct {
	Status PopStatus
	// Call is the popped chunk's payload (Popped).
	Call []byte
	// CallID is the popped call's id, which is also its asynq task id.
	CallID string
	// ReadyIn is how long until a NotReady chunk is ready.
	ReadyIn time.Duration
	// Size is the number of items of a PartialReady chunk.
	Size int
}

// Pop takes the lane's next chunk if the window and the batch rules allow.
// A popped chunk is recorded as in flight until Handoff.
func (o *Outbox) Pop(ctx context.Context, p PopRequest) (PopResult, error) {
	return o.pop(ctx, p, "c"+randomHex(12))
}

// pop is Pop with the call id given: running it again with the same id
// (what the Redis client does when a connection drops before the reply)
// returns the same chunk.
func (o *Outbox) pop(ctx context.Context, p PopRequest, id string) (PopResult, error) {
	soft := "0"
	if p.Lane.Soft {
		soft = "1"
	}
	res, err := popCmd.Run(ctx, o.rdb,
		[]string{keyLanes, keyInflight, keyInflightAt, keyOutstanding(p.Lane.Scope(), p.Owner)},
		prefix, p.Lane.id(), p.Cap, p.Wait.Milliseconds(), flag(p.AllowPartial), p.Window, p.Lease.Milliseconds(),
		id, p.Lane.Zone, string(p.Lane.Kind), soft, p.Owner, flag(p.Eager)).Slice()
	if err != nil {
		return PopResult{}, fmt.Errorf("popping %s: %w", p.Lane.id(), err)
	}
	status, _ := res[0].(int64)
	value, _ := res[1].(string)
	now, _ := res[2].(int64)
	switch status {
	case 1:
		return PopResult{Status: Popped, Call: []byte(value), CallID: id}, nil
	case 0:
		return PopResult{Status: WindowFull}, nil
	case -1:
		return PopResult{Status: LaneEmpty}, nil
	case -2:
		at, _ := strconv.ParseInt(value, 10, 64)
		return PopResult{Status: NotReady, ReadyIn: time.Duration(at-now) * time.Millisecond}, nil
	case -3:
		n, _ := strconv.Atoi(value)
		return PopResult{Status: PartialReady, Size: n}, nil
	}
	return PopResult{}, fmt.Errorf("popping %s: unexpected status %d", p.Lane.id(), status)
}

// Handoff clears a call's in-flight record once its task is in asynq.
// Two plain commands, not MULTI/EXEC, so that the Redis client sends each
// again when its reply is lost (both are harmless twice; the reaper skips
// a time without a record).
func (o *Outbox) Handoff(ctx context.Context, callID string) error {
	if err := o.rdb.HDel(ctx, keyInflight, callID).Err(); err != nil {
		return err
	}
	return o.rdb.ZRem(ctx, keyInflightAt, callID).Err()
}

// InFlight returns the in-flight records among ids (calls popped or
// recorded but not yet handed to asynq).
func (o *Outbox) InFlight(ctx context.Context, ids ...string) (map[string][]byte, error) {
	vals, err := o.rdb.HMGet(ctx, keyInflight, ids...).Result()
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	for i, v := range vals {
		if s, ok := v.(string); ok {
			out[ids[i]] = []byte(s)
		}
	}
	return out, nil
}

// strandedCmd lists in-flight records older than ARGV[1] ms.
//
// KEYS[1] in-flight hash, KEYS[2] in-flight times.
// Returns {id, payload, id, payload, …}.
var strandedCmd = redis.NewScript(luaClock + `
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', exact(now - tonumber(ARGV[1])), 'LIMIT', 0, 100)
local out = {}
for _, id in ipairs(ids) do
  local rec = redis.call('HGET', KEYS[1], id)
  if rec then
    out[#out + 1] = id
    out[#out + 1] = rec
  else
    redis.call('ZREM', KEYS[2], id)
  end
end
return out
`)

// Stranded returns in-flight records older than age: chunks whose hand-off
// to asynq did not finish (the process died, or Redis failed the enqueue).
func (o *Outbox) Stranded(ctx context.Context, age time.Duration) (map[string][]byte, error) {
	res, err := strandedCmd.Run(ctx, o.rdb, []string{keyInflight, keyInflightAt}, age.Milliseconds()).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("listing stranded calls: %w", err)
	}
	out := make(map[string][]byte, len(res)/2)
	for i := 0; i+1 < len(res); i += 2 {
		out[res[i]] = []byte(res[i+1])
	}
	return out, nil
}

// Lanes lists the lanes that have items waiting.
func (o *Outbox) Lanes(ctx context.Context) ([]Lane, error) {
	ids, err := o.rdb.SMembers(ctx, keyLanes).Result()
	if err != nil {
		return nil, err
	}
	lanes := make([]Lane, 0, len(ids))
	for _, id := range ids {
		if l, ok := parseLane(id); ok {
			lanes = append(lanes, l)
		}
	}
	return lanes, nil
}

// Status is a request's progress.
type Status struct {
	ID         string `json:"id"`
	State      string `json:"state"`
	Total      int    `json:"total"`
	Purged     int    `json:"purged"`
	Dead       int    `json:"dead"`
	Superseded int    `json:"superseded"`
	// Error says why a request failed as a whole (its staged items were
	// lost before admission), when it did.
	Error string `json:"error,omitempty"`
}

// ErrUnknownRequest: no admitted request has the id (it may still wait in
// the queue, or its status expired).
var ErrUnknownRequest = errors.New("unknown request")

// Status reads a request's progress.
func (o *Outbox) Status(ctx context.Context, id string) (Status, error) {
	v, err := o.rdb.HGetAll(ctx, keyRequest(id)).Result()
	if err != nil {
		return Status{}, err
	}
	if len(v) == 0 {
		return Status{}, ErrUnknownRequest
	}
	atoi := func(k string) int { n, _ := strconv.Atoi(v[k]); return n }
	s := Status{ID: id, Total: atoi("total"), Purged: atoi("purged"), Dead: atoi("dead"), Superseded: atoi("superseded")}
	s.Error = v["error"]
	admitted := atoi("pending") == 0
	switch done := s.Purged + s.Dead + s.Superseded; {
	case s.Error != "":
		s.State = "failed"
	case admitted && done >= s.Total && s.Dead > 0:
		s.State = "failed"
	case admitted && done >= s.Total:
		s.State = "done"
	case done > 0:
		s.State = "in_progress"
	default:
		s.State = "queued"
	}
	return s, nil
}

// FailRequest marks a request failed as a whole, with the reason: what it
// asked for cannot be purged or dead-lettered item by item (its staged
// items expired or vanished before admission). Items of it already
// admitted still go out.
func (o *Outbox) FailRequest(ctx context.Context, id, reason string) error {
	if err := o.rdb.HSet(ctx, keyRequest(id), "error", reason, "finished", time.Now().UnixMilli()).Err(); err != nil {
		return err
	}
	return o.rdb.PExpire(ctx, keyRequest(id), o.retention).Err()
}

func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// LaneStat is one lane's backlog, for metrics.
type LaneStat struct {
	Lane  Lane
	Depth int64
	// Oldest is when the oldest waiting item was admitted.
	Oldest time.Time
}

// laneStatsCmd reports each lane's depth and when its oldest item was
// admitted (ms; 0 when empty).
//
// KEYS[1] lanes set (for routing). ARGV[1] prefix, ARGV[2…] lane ids.
// Returns {depth, oldest, depth, oldest, …}.
var laneStatsCmd = redis.NewScript(luaClock + luaLanes + `
local out = {}
for i = 2, #ARGV do
  local lk, _, gk = laneKeys(ARGV[1], ARGV[i])
  local n = redis.call('LLEN', lk)
  out[#out + 1] = n
  out[#out + 1] = 0
  if n > 0 then out[#out] = oldestAt(gk) end
end
return out
`)

// LaneStats reports every lane's depth and oldest item.
func (o *Outbox) LaneStats(ctx context.Context) ([]LaneStat, error) {
	lanes, err := o.Lanes(ctx)
	if err != nil || len(lanes) == 0 {
		return nil, err
	}
	args := []any{prefix}
	for _, l := range lanes {
		args = append(args, l.id())
	}
	res, err := laneStatsCmd.Run(ctx, o.rdb, []string{keyLanes}, args...).Int64Slice()
	if err != nil {
		return nil, fmt.Errorf("reading lane stats: %w", err)
	}
	out := make([]LaneStat, 0, len(lanes))
	for i, l := range lanes {
		st := LaneStat{Lane: l, Depth: res[2*i]}
		if ms := res[2*i+1]; ms > 0 {
			st.Oldest = time.UnixMilli(ms)
		}
		out = append(out, st)
	}
	return out, nil
}
