package metrics

import (
	"context"
	"crypto/rand"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/purgeq/purgeq/internal/keyspace"
)

// lease is the export lease: a key in Redis naming the one worker that
// exports the shared state, so that it is counted once however many
// workers are scraped. It lasts ttl unless its holder renews it; a worker
// takes it when it is free, at a scrape or on Run's ticker.
type lease struct {
	rdb redis.UniversalClient
	id  string // this worker's
	ttl time.Duration
	// done is set once run has given the lease up: a scrape during the
	// worker's shutdown must not take it back.
	done atomic.Bool
}

func newLease(rdb redis.UniversalClient, ttl time.Duration) *lease {
	return &lease{rdb: rdb, id: rand.Text(), ttl: ttl}
}

// holdCmd renews the lease if ARGV[1] holds it, takes it if it is free.
// KEYS[1] lease; ARGV[1] holder, ARGV[2] ttl (ms). Returns 1 if held.
var holdCmd = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v and v ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1`)

// releaseCmd gives the lease up if ARGV[1] holds it.
var releaseCmd = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0`)

// hold renews the lease or takes it, and reports whether this worker holds it.
func (l *lease) hold(ctx context.Context) (bool, error) {
	if l.done.Load() {
		return false, nil
	}
	n, err := holdCmd.Run(ctx, l.rdb, []string{keyspace.MetricsLease}, l.id, l.ttl.Milliseconds()).Int()
	return n == 1, err
}

// run holds the lease on a ticker until ctx ends, then releases it.
func (l *lease) run(ctx context.Context) {
	t := time.NewTicker(l.ttl / 3)
	defer t.Stop()
	for {
		l.hold(ctx) // an error: the next tick or scrape tries again
		select {
		case <-ctx.Done():
			l.done.Store(true)
			rctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			releaseCmd.Run(rctx, l.rdb, []string{keyspace.MetricsLease}, l.id)
			return
		case <-t.C:
		}
	}
}
