package limits

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/purgeq/purgeq/limits/rate"
)

// ProducerWindows bound the items each producer may queue per window (a
// producer's rate): a sliding window in Redis per producer, shared by every
// intake process.
type ProducerWindows struct {
	rdb redis.Cmdable
}

// NewProducerWindows returns the producers' windows on rdb.
func NewProducerWindows(rdb redis.Cmdable) *ProducerWindows { return &ProducerWindows{rdb: rdb} }

// producerWindowKey holds one producer's recent admissions.
func producerWindowKey(producer string) string {
	return "purgeq:limits:{producer:" + producer + "}:items"
}

// producerWindowCmd takes n items from a producer's window if it has room.
//
// KEYS[1] the producer's window: a sorted set of "µs:seq:n" scored by µs.
// ARGV[1] window µs, ARGV[2] items allowed per window, ARGV[3] n, ARGV[4]
// a unique member suffix.
// Returns {1, 0} when taken, else {0, µs until enough has left the window}.
// ErrLargerThanRate: one request holds more items than its producer may
// queue in a whole window; it can never fit.
var ErrLargerThanRate = errors.New("more items than the producer may queue in a window")

var producerWindowCmd = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local win, limit, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now - win))
local entries = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local function count(m) return tonumber(string.match(m, ':(%d+)$')) or 0 end
local used = 0
for i = 1, #entries, 2 do used = used + count(entries[i]) end
if used + n > limit then
  local need, freed = used + n - limit, 0
  for i = 1, #entries, 2 do
    freed = freed + count(entries[i])
    if freed >= need then return {0, math.max(1, tonumber(entries[i + 1]) + win - now)} end
  end
  return {0, win}
end
redis.call('ZADD', KEYS[1], string.format('%.0f', now), string.format('%.0f', now) .. ':' .. ARGV[4] .. ':' .. n)
redis.call('PEXPIRE', KEYS[1], math.ceil(win / 1000) + 1000)
return {1, 0}
`)

// Take takes n items from the producer's window of r. It reports how long
// to wait when the window has no room; a request larger than r.N never
// fits, which the error says.
func (w *ProducerWindows) Take(ctx context.Context, producer string, n int, r rate.Rate) (ok bool, retryAfter time.Duration, err error) {
	if n > r.N {
		return false, 0, fmt.Errorf("%d items: %w (%s)", n, ErrLargerThanRate, r)
	}
	res, err := producerWindowCmd.Run(ctx, w.rdb, []string{producerWindowKey(producer)},
		r.Per.Microseconds(), r.N, n, member()).Int64Slice()
	if err != nil {
		return false, 0, fmt.Errorf("limits: producer window: %w", err)
	}
	return res[0] == 1, time.Duration(res[1]) * time.Microsecond, nil
}
