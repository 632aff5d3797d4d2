package limits

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/purgeq/purgeq/limits/rate"
	"github.com/purgeq/purgeq/purge"
)

// Config is one API token's limits.
type Config struct {
	// Token names the API token in Redis keys: use Fingerprint(token),
	// never the token. Workers sharing a token must share it; so do
	// accounts sharing a token (they share its global window and cooldown).
	Token string
	// Account names the Cloudflare account whose purge buckets the calls
	// use ("": a single-account deployment).
	Account string
	// Global is the number of calls per window this deployment may make
	// with the token. Leave headroom below Cloudflare's 1200/5m for the
	// dashboard and other tools.
	Global rate.Rate
	// Guard lengthens the window kept here beyond Global.Per, and keeps a
	// reserve of the tokens each bucket refills in that time, covering
	// network jitter between acquisition and arrival. Zero means no guard.
	Guard time.Duration
	// GlobalCountsFiles makes URL purges take a slot in the global window
	// (Cloudflare's statements have differed; counting is the safe default).
	GlobalCountsFiles bool
	// Flex is the tag/host/prefix/everything bucket (one token per call);
	// URL the URL bucket (one token per URL).
	Flex, URL Bucket
}

// Bucket is a token bucket: Rate refills it, Burst is its size.
type Bucket struct {
	Rate  rate.Rate
	Burst int
}

// Limiter acquires and records limits in Redis. It is safe for concurrent
// use and shared, through Redis, with every other Limiter of the same Scope.
type Limiter struct {
	rdb  redis.Cmdable
	cfg  Config
	keys keys
}

// New validates cfg and returns a Limiter on rdb.
func New(rdb redis.Cmdable, cfg Config) (*Limiter, error) {
	var errs []error
	if cfg.Token == "" {
		errs = append(errs, errors.New("limits: Token (the API token's fingerprint) is empty"))
	}
	if cfg.Global.IsZero() {
		errs = append(errs, errors.New("limits: the global limit must be positive"))
	}
	if cfg.Guard < 0 {
		errs = append(errs, errors.New("limits: the guard must not be negative"))
	}
	for name, b := range map[string]Bucket{"flex": cfg.Flex, "URL": cfg.URL} {
		if b.Rate.IsZero() || b.Burst <= 0 {
			errs = append(errs, fmt.Errorf("limits: the %s bucket needs a positive rate and burst (got %s, burst %d)", name, b.Rate, b.Burst))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &Limiter{rdb: rdb, cfg: cfg, keys: keysFor(cfg.Token, cfg.Account)}, nil
}

// Need is what one API call needs of the limits. The zero Need is an API
// call that is no purge (listing zones): a slot in the global window only.
type Need struct {
	Kind purge.Kind
	// Items is the number of items; URL purges take one URL token each.
	Items int
	// High marks a high-priority call: when it must wait, it claims the
	// bucket's next token.
	High bool
	// Lane names what the call is fair to (its zone): a call that must
	// wait holds a place in line for its lane, ordered by when the lane
	// was last served. Empty: no place in line.
	Lane string
}

func (c Need) bucket() purge.Scope { return purge.BucketScope(c.Kind) }

func (c Need) tokens() int {
	if c.Kind == purge.Files {
		return c.Items
	}
	return 1
}

// Result is the answer of Acquire or Peek.
type Result struct {
	// OK: the call may go now (Acquire has taken its tokens).
	OK bool
	// Wait is how long until it could succeed, when not OK.
	Wait time.Duration
	// Blocker names what made it wait: "cooldown:global", "cooldown:flex",
	// "cooldown:url", "global", "flex" or "url".
	Blocker string
	// GlobalRemaining is the global window's free slots after this call;
	// BucketTokens the call's bucket's tokens after it.
	GlobalRemaining int
	BucketTokens    int
	// At is the Redis server's time of the decision.
	At time.Time
	// LastServed is when the call's lane last got capacity (zero: not
	// within the last hour).
	LastServed time.Time
}

// acquireCmd takes a slot in the global window and tokens from one bucket,
// all or nothing, in a fair order.
//
// Fairness: a call that must wait for its bucket (or, its bucket holding a
// token, for the global window) registers its lane as a waiter, scored by
// when the lane was last served. A call that finds capacity leaves it to an
// older-served waiter that still asks (it comes back by its deadline), so a
// lone item of a quiet zone goes out with the next token instead of
// behind every call of a busy zone already waiting; and a call whose bucket
// has a token wins the next global slot over calls of a scope whose bucket
// is never the constraint, which also leave free the slots a scarce
// bucket with calls waiting will want within the window.
//
// KEYS[1] window zset, KEYS[2] bucket hash, KEYS[3] global cooldown,
// KEYS[4] bucket cooldown, KEYS[5] the bucket's claim (a high-priority
// call waiting for its next token), KEYS[6] bucket waiters (zset: lane →
// last served), KEYS[7] their deadlines (hash), KEYS[8] global waiters,
// KEYS[9] their deadlines, KEYS[10] served (zset: lane → last grant),
// KEYS[11] Cloudflare's own count (hash: r, until, at; Observe),
// KEYS[12] the slots scarce buckets want (hash), KEYS[13] the window's
// calls of scarce buckets (zset).
// ARGV[1] "1" for a dry run (Peek), ARGV[2] "1" if the call counts in the
// window, ARGV[3] window limit, ARGV[4] window length with guard (µs),
// ARGV[5] bucket refill per µs, ARGV[6] bucket size, ARGV[7] tokens needed,
// ARGV[8] unique member for the window, ARGV[9] the bucket's name,
// ARGV[10] the guard (µs), ARGV[11] "1" for a high-priority call: one that
// must wait claims the bucket's next token, which other calls then leave
// to it; ARGV[12] the lane ("" for none: no fairness), ARGV[13] how long
// past its wait a waiter stays registered (µs).
// Returns {ok 0|1, wait µs, blocker, window slots left, bucket tokens left,
// server time µs, the lane's last grant µs or 0}.
var acquireCmd = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local dry = ARGV[1] == '1'
local counts = ARGV[2] == '1'
local limit, win = tonumber(ARGV[3]), tonumber(ARGV[4])
local refill, burst, need = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local high, lane, slack = ARGV[11] == '1', ARGV[12], tonumber(ARGV[13])
local me = ARGV[9] .. '|' .. lane
local wait, blocker = 0, ''
-- Lua's tostring keeps 14 digits; µs timestamps have 16.
local function exact(x) return string.format('%.0f', x) end
local function consider(w, name)
  if w > wait then wait, blocker = w, name end
end
-- how many waiters scored before this lane's score still ask (up to 16),
-- and the most tokens one of them needs, pruning those past their
-- deadline (a line's hash holds "deadline:need" for each)
local function rivals(wkey, ukey, score)
  local list = redis.call('ZRANGEBYSCORE', wkey, '-inf', '(' .. exact(score), 'LIMIT', 0, 16)
  local n, most = 0, 0
  for _, m in ipairs(list) do
    local deadline, needs = string.match(redis.call('HGET', ukey, m) or '', '^(%d+):?(%d*)$')
    if (tonumber(deadline) or 0) < now then
      redis.call('ZREM', wkey, m)
      redis.call('HDEL', ukey, m)
    elseif m ~= me then
      n = n + 1
      most = math.max(most, tonumber(needs) or 1)
    end
  end
  return n, most
end
local served = tonumber(redis.call('ZSCORE', KEYS[10], me)) or 0

consider((tonumber(redis.call('GET', KEYS[3])) or 0) - now, 'cooldown:global')
consider((tonumber(redis.call('GET', KEYS[4])) or 0) - now, 'cooldown:' .. ARGV[9])

local inwin = redis.call('ZCOUNT', KEYS[1], '(' .. exact(now - win), '+inf')
local function nextSlot()
  local e = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. exact(now - win), '+inf', 'WITHSCORES', 'LIMIT', math.max(0, inwin - limit), 1)
  if #e == 0 then return 1 end
  return math.max(1, tonumber(e[2]) + win - now)
end
if counts and inwin >= limit then
  consider(nextSlot(), 'global')
end
-- Cloudflare's own count of what is left (the token may be used
-- elsewhere): never more than it said remains, less what was acquired
-- since the call it answered (which it may not have counted), keeping
-- one slot for the token's other users. Once the slot it said frees next
-- is free, as many as it said remained (at least one) go until an answer
-- says more.
local cf = redis.call('HMGET', KEYS[11], 'r', 'until', 'at')
if counts and cf[1] then
  local untilv = tonumber(cf[2])
  if now < untilv then
    local used = redis.call('ZCOUNT', KEYS[1], '(' .. cf[3], '+inf')
    if tonumber(cf[1]) - used <= 1 then
      consider(untilv - now, 'cloudflare')
    end
  elseif redis.call('ZCOUNT', KEYS[1], '(' .. exact(math.max(untilv, now - 10000000)), '+inf') >= math.max(1, tonumber(cf[1]) - 1) then
    -- past the reset: what it said remained, at least one, until an
    -- answer says more (calls older than 10 s without one no longer count)
    consider(100000, 'cloudflare')
  end
end

local b = redis.call('HMGET', KEYS[2], 'tokens', 'ts')
local tokens = tonumber(b[1]) or burst
local ts = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * refill)
-- Keep a reserve of the tokens the guard time refills, so that calls
-- arriving up to the guard closer together than they were acquired still
-- find Cloudflare's bucket holding enough.
local want = need + math.min(refill * tonumber(ARGV[10]), burst - need)
local globalOnly = ARGV[14] == '1'
if globalOnly then want = 0 end
local bucketWait = 0
if tokens < want then
  bucketWait = math.ceil((want - tokens) / refill)
  consider(bucketWait, ARGV[9])
end
local second = math.max(1, math.ceil((want + need - tokens) / refill))
-- For the global window, a call whose bucket is scarce (it holds this
-- call's tokens but not the next one's: its refill is wasted while the
-- call waits) goes before calls whose bucket is not the constraint.
local scarce = not globalOnly and tokens < want + need
local gscore = served
if scarce then gscore = served - 1e16 end
-- A scarce bucket with calls waiting will use its refill's worth of the
-- global window: calls of buckets that are not the constraint leave that
-- many slots free (KEYS[12]: bucket → slots a window and until when it
-- wants them; KEYS[13]: the window's calls of scarce buckets).
local slotsWanted = math.min(limit, math.floor(refill * win / math.max(1, need)))
local reserve = 0
if counts and not scarce and not high then
  local d = redis.call('HGETALL', KEYS[12])
  for i = 1, #d, 2 do
    if d[i] ~= KEYS[2] then
      local n, untilv = string.match(d[i + 1], '^(%d+):(%d+)$')
      if n and tonumber(untilv) > now then reserve = reserve + tonumber(n) end
    end
  end
  if reserve > 0 then
    -- never more than half the window: the others are served too
    reserve = math.min(math.floor(limit / 2), reserve)
    reserve = math.max(0, reserve - redis.call('ZCOUNT', KEYS[13], '(' .. exact(now - win), '+inf'))
  end
  if reserve > 0 and limit - inwin <= reserve then
    consider(nextSlot(), 'reserve:global')
  end
end
local function wanting()
  -- until a little past its next token: calls waiting keep it wanted
  redis.call('HSET', KEYS[12], KEYS[2], slotsWanted .. ':' .. exact(now + 1.25 * math.max(500000, 1 / refill)))
  redis.call('PEXPIRE', KEYS[12], math.ceil(win / 1000) + 1000)
end
if not high then
  local claim = redis.call('PTTL', KEYS[5])
  if claim > 0 and tokens < want + need then
    -- a high call waits for the next token: leave it to it
    consider(second, 'claim:' .. ARGV[9])
  end
  if lane ~= '' and bucketWait == 0 then
    -- leave the tokens to a lane served before this one that waits for
    -- them (a call of many URLs is not starved by calls of a few)
    local n, most = rivals(KEYS[6], KEYS[7], served)
    if n > 0 and tokens < want + most then
      consider(math.max(1, math.ceil((want + most - tokens) / refill)), 'fair:' .. ARGV[9])
    end
  end
  if lane ~= '' and wait == 0 and counts and rivals(KEYS[8], KEYS[9], gscore) >= limit - inwin then
    consider(nextSlot(), 'fair:global')
  end
end
if high and not dry then
  if wait > 0 then
    redis.call('SET', KEYS[5], '1', 'PX', math.ceil(wait / 1000) + 1000)
  else
    redis.call('DEL', KEYS[5])
  end
end

if wait > 0 then
  if not dry and counts and (bucketWait > 0 or scarce) then wanting() end
  if not dry and lane ~= '' and not high and string.sub(blocker, 1, 9) ~= 'cooldown:' then
    -- wait in line: for the bucket, or (the bucket holding a token) for
    -- the global window
    local wkey, ukey, score = KEYS[6], KEYS[7], served
    local okey, oukey = KEYS[8], KEYS[9]
    if bucketWait == 0 and (blocker == 'global' or blocker == 'fair:global' or blocker == 'reserve:global' or blocker == 'cloudflare') then
      wkey, ukey, score, okey, oukey = KEYS[8], KEYS[9], gscore, KEYS[6], KEYS[7]
    end
    -- one place in one line at a time
    redis.call('ZREM', okey, me)
    redis.call('HDEL', oukey, me)
    redis.call('ZADD', wkey, exact(score), me)
    redis.call('HSET', ukey, me, exact(now + wait + slack) .. ':' .. need)
    -- the line lives as long as its longest wait
    local ttl = math.ceil((wait + slack) / 1000) + 1000
    for _, k in ipairs({wkey, ukey}) do
      if redis.call('PTTL', k) < ttl then redis.call('PEXPIRE', k, ttl) end
    end
  end
  return {0, math.ceil(wait), blocker, math.max(0, limit - inwin), math.floor(tokens), now, served}
end
if dry then
  return {1, 0, '', math.max(0, limit - inwin), math.floor(tokens), now, served}
end
if counts then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', exact(now - win))
  redis.call('ZADD', KEYS[1], exact(now), ARGV[8])
  redis.call('PEXPIRE', KEYS[1], math.ceil(win / 1000) + 1000)
  inwin = inwin + 1
  if scarce then
    wanting()
    redis.call('ZREMRANGEBYSCORE', KEYS[13], '-inf', exact(now - win))
    redis.call('ZADD', KEYS[13], exact(now), ARGV[8])
    redis.call('PEXPIRE', KEYS[13], math.ceil(win / 1000) + 1000)
  end
end
if not globalOnly then
  tokens = tokens - need
  redis.call('HSET', KEYS[2], 'tokens', tostring(tokens), 'ts', exact(now))
  redis.call('PEXPIRE', KEYS[2], math.ceil((burst - tokens) / refill / 1000) + 1000)
end
if lane ~= '' then
  for _, k in ipairs({KEYS[6], KEYS[8]}) do redis.call('ZREM', k, me) end
  for _, k in ipairs({KEYS[7], KEYS[9]}) do redis.call('HDEL', k, me) end
  redis.call('ZADD', KEYS[10], exact(now), me)
  redis.call('ZREMRANGEBYSCORE', KEYS[10], '-inf', exact(now - 3600000000))
  redis.call('PEXPIRE', KEYS[10], 3600000)
end
return {1, 0, '', math.max(0, limit - inwin), math.floor(tokens), now, served}
`)

// Acquire takes everything c needs, or nothing and says how long to wait.
func (l *Limiter) Acquire(ctx context.Context, c Need) (Result, error) {
	return l.run(ctx, c, false)
}

// Peek answers what Acquire would, taking nothing.
func (l *Limiter) Peek(ctx context.Context, c Need) (Result, error) {
	return l.run(ctx, c, true)
}

func (l *Limiter) run(ctx context.Context, c Need, dry bool) (Result, error) {
	b := l.cfg.Flex
	if c.bucket() == purge.ScopeURL {
		b = l.cfg.URL
	}
	need := c.tokens()
	if c.Kind == "" {
		need = 0
	}
	if need > b.Burst {
		return Result{}, fmt.Errorf("limits: a call of %d %s needs %d tokens but the %s bucket holds at most %d", c.Items, c.Kind, need, c.bucket(), b.Burst)
	}
	bucketKey, coolKey := l.keys.bucket(c.bucket())
	counts := c.Kind != purge.Files || l.cfg.GlobalCountsFiles // a non-purge call (Kind "") counts
	window := l.cfg.Global.Per + l.cfg.Guard
	waiters := l.keys.waiters(c.bucket())
	res, err := acquireCmd.Run(ctx, l.rdb,
		[]string{l.keys.window, bucketKey, l.keys.coolGlobal, coolKey, l.keys.claim(c.bucket()),
			waiters, waiters + ":until", l.keys.globalWaiters, l.keys.globalWaiters + ":until", l.keys.served, l.keys.cloudflare,
			l.keys.wanted, l.keys.window + ":scarce"},
		flag(dry), flag(counts), l.cfg.Global.N, window.Microseconds(),
		strconv.FormatFloat(b.Rate.PerSecond()/1e6, 'g', -1, 64), b.Burst, need, member(), string(c.bucket()), l.cfg.Guard.Microseconds(), flag(c.High),
		c.Lane, waiterSlack.Microseconds(), flag(c.Kind == ""),
	).Slice()
	if err != nil {
		return Result{}, fmt.Errorf("limits: acquire: %w", err)
	}
	if len(res) != 7 {
		return Result{}, fmt.Errorf("limits: acquire: unexpected reply %v", res)
	}
	ok, _ := res[0].(int64)
	wait, _ := res[1].(int64)
	blocker, _ := res[2].(string)
	remaining, _ := res[3].(int64)
	tokens, _ := res[4].(int64)
	at, _ := res[5].(int64)
	r := Result{OK: ok == 1, Wait: time.Duration(wait) * time.Microsecond, Blocker: blocker,
		GlobalRemaining: int(remaining), BucketTokens: int(tokens), At: time.UnixMicro(at)}
	if served, _ := res[6].(int64); served > 0 {
		r.LastServed = time.UnixMicro(served)
	}
	return r, nil
}

// waiterSlack is how long past its wait a call keeps its place in line:
// one that does not ask again by then (re-scheduled, crashed) loses it.
const waiterSlack = 500 * time.Millisecond

// observeCmd keeps what Cloudflare said remains of the token's window,
// unless an answer to a later call is kept already.
//
// KEYS[1] the observation hash. ARGV[1] remaining, ARGV[2] µs until
// Cloudflare's window frees a slot, ARGV[3] when the answered call was
// acquired (µs, the server's clock), ARGV[4] how long to keep it (ms).
var observeCmd = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local prev = tonumber(redis.call('HGET', KEYS[1], 'at')) or 0
if prev > tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], 'r', ARGV[1], 'until', string.format('%.0f', now + tonumber(ARGV[2])), 'at', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
`)

// Observe folds in Cloudflare's own count of the token's window (its
// Ratelimit header: remaining calls, and when the window frees a slot),
// given in the answer to a call acquired at acquired (Result.At): until
// then, calls go only while fewer have been acquired since than it said
// remain, less one kept for the token's other users; after, one at a
// time until an answer says more. It never loosens the configured limit,
// which still holds.
func (l *Limiter) Observe(ctx context.Context, remaining int, reset time.Duration, acquired time.Time) error {
	if reset <= 0 || acquired.IsZero() {
		return nil
	}
	keep := max(reset, l.cfg.Global.Per) + l.cfg.Guard
	if err := observeCmd.Run(ctx, l.rdb, []string{l.keys.cloudflare}, max(0, remaining), reset.Microseconds(),
		strconv.FormatInt(acquired.UnixMicro(), 10), keep.Milliseconds()).Err(); err != nil {
		return fmt.Errorf("limits: observe: %w", err)
	}
	return nil
}

// members make window entries unique across processes: a random process
// prefix and a counter.
var (
	memberPrefix = func() string {
		var b [6]byte
		rand.Read(b[:])
		return hex.EncodeToString(b[:]) + ":"
	}()
	memberSeq atomic.Uint64
)

func member() string { return memberPrefix + strconv.FormatUint(memberSeq.Add(1), 36) }

func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// cooldownCmd extends a cooldown; it never shortens one. For a purge
// bucket it also empties the bucket: Cloudflare's is empty, and a local
// one that still believed in its tokens would let every waiting call fire
// at once when the pause ends.
//
// KEYS[1] cooldown key, KEYS[2] the bucket (purge-bucket scopes only).
// ARGV[1] duration (µs), ARGV[2] how long the bucket takes to refill in
// full (ms).
// Returns the cooldown's end, µs since the epoch by the server's clock.
var cooldownCmd = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local untilv = now + tonumber(ARGV[1])
local cur = tonumber(redis.call('GET', KEYS[1])) or 0
if cur > untilv then untilv = cur end
redis.call('SET', KEYS[1], string.format('%.0f', untilv), 'PX', math.ceil((untilv - now) / 1000) + 1)
if KEYS[2] then
  redis.call('HSET', KEYS[2], 'tokens', 0, 'ts', string.format('%.0f', now))
  redis.call('PEXPIRE', KEYS[2], ARGV[2] + 1000)
end
return untilv
`)

// Cooldown stops every call of scope for d (by the Redis clock), unless a
// longer cooldown is already in force, and empties a purge bucket's
// tokens. It returns when the cooldown ends.
func (l *Limiter) Cooldown(ctx context.Context, scope purge.Scope, d time.Duration) (time.Time, error) {
	keys, refill := []string{l.keys.cooldown(scope)}, int64(0)
	if scope != purge.ScopeGlobal {
		bucket, _ := l.keys.bucket(scope)
		b := l.cfg.Flex
		if scope == purge.ScopeURL {
			b = l.cfg.URL
		}
		keys = append(keys, bucket)
		refill = int64(float64(b.Burst) / b.Rate.PerSecond() * 1000)
	}
	end, err := cooldownCmd.Run(ctx, l.rdb, keys, d.Microseconds(), refill).Int64()
	if err != nil {
		return time.Time{}, fmt.Errorf("limits: cooldown: %w", err)
	}
	return time.UnixMicro(end), nil
}

// MaxRetryAfter is the longest Retry-After honoured: Cloudflare documents
// a 5-minute block, so a hint of a year is a bug somewhere, and obeying it
// would stop purging for a year.
const MaxRetryAfter = time.Hour

// CooldownFor is how long a 429 should stop its scope: for the global
// window, the longer of the configured cooldown and Cloudflare's hint; for a
// purge bucket, the hint, else the time the call's tokens take to refill.
// The hint counts up to MaxRetryAfter.
func (l *Limiter) CooldownFor(e *purge.Error, c Need, globalCooldown time.Duration) time.Duration {
	hint := min(e.RetryAfter, MaxRetryAfter)
	switch e.Scope {
	case purge.ScopeGlobal:
		return max(globalCooldown, hint)
	}
	if hint > 0 {
		return hint
	}
	b := l.cfg.Flex
	if e.Scope == purge.ScopeURL {
		b = l.cfg.URL
	}
	return time.Duration(float64(c.tokens()) / b.Rate.PerSecond() * float64(time.Second))
}

// State is a snapshot for metrics and the UI.
type State struct {
	GlobalRemaining int
	FlexTokens      int
	URLTokens       int
	// Cooldowns holds the end of each cooldown in force.
	Cooldowns map[purge.Scope]time.Time
}

// State reads the limits without taking anything.
func (l *Limiter) State(ctx context.Context) (State, error) {
	flex, err := l.Peek(ctx, Need{Kind: purge.Tags, Items: 1})
	if err != nil {
		return State{}, err
	}
	urls, err := l.Peek(ctx, Need{Kind: purge.Files})
	if err != nil {
		return State{}, err
	}
	cool, err := cooldowns(ctx, l.rdb, l.keys)
	if err != nil {
		return State{}, err
	}
	st := State{GlobalRemaining: flex.GlobalRemaining, FlexTokens: flex.BucketTokens, URLTokens: urls.BucketTokens, Cooldowns: map[purge.Scope]time.Time{}}
	for scope, left := range cool {
		st.Cooldowns[scope] = time.Now().Add(left)
	}
	return st, nil
}

// Cooldowns reports how long each cooldown in force on a token's scope has
// left, by the Redis clock. It needs only the scope (Fingerprint of the
// token), so that producers can show it.
func Cooldowns(ctx context.Context, rdb redis.Cmdable, scope string) (map[purge.Scope]time.Duration, error) {
	return cooldowns(ctx, rdb, keysFor(scope, ""))
}

func cooldowns(ctx context.Context, rdb redis.Cmdable, k keys) (map[purge.Scope]time.Duration, error) {
	scopes := []purge.Scope{purge.ScopeGlobal, purge.ScopeFlex, purge.ScopeURL}
	var now *redis.TimeCmd
	var ends *redis.SliceCmd
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		now = p.Time(ctx)
		ends = p.MGet(ctx, k.cooldown(scopes[0]), k.cooldown(scopes[1]), k.cooldown(scopes[2]))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("limits: reading cooldowns: %w", err)
	}
	out := map[purge.Scope]time.Duration{}
	for i, v := range ends.Val() {
		s, _ := v.(string)
		end, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			continue
		}
		if left := time.UnixMicro(end).Sub(now.Val()); left > 0 {
			out[scopes[i]] = left
		}
	}
	return out, nil
}

// tokenKey holds the fingerprint of the token the workers run with, for
// producers (the key's name predates the field's).
const tokenKey = "purgeq:limits:scope"

// PublishToken records the workers' token fingerprint for producers.
func PublishToken(ctx context.Context, rdb redis.Cmdable, fingerprint string) error {
	return rdb.Set(ctx, tokenKey, fingerprint, 0).Err()
}

// PublishedToken reads the workers' token fingerprint ("" if none published).
func PublishedToken(ctx context.Context, rdb redis.Cmdable) (string, error) {
	s, err := rdb.Get(ctx, tokenKey).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	return s, err
}
