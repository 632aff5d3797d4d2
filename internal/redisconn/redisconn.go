// Package redisconn opens PURGE_REDIS_URL for go-redis and for asynq alike:
// a single server (redis://, rediss://, unix://); a Redis Cluster, named by
// one node and further nodes as addr parameters
// (redis://host1:6379?addr=host2:6379&addr=host3:6379); or a master watched
// by Sentinels, named by the Sentinels and the master's name
// (redis://sentinel1:26379?addr=sentinel2:26379&master_name=mymaster). Every key the
// project's scripts touch together shares a hash tag, so they run on a
// Cluster unchanged.
package redisconn

import (
	"net/url"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// The one connection configuration of the worker, the CLI and the intake.
// Every round trip is bounded, so that a Redis blip (a reply lost to a cut
// connection, a restart, a failover) costs seconds, never a stall: go-redis
// sends a command whose reply was lost again on a new connection (every
// write of this project is safe twice), at most maxRetries times with
// backoff between retryMin and retryMax, and the connection handshake sends
// no CLIENT SETINFO (one reply fewer to lose). go-redis v9.14 retries a
// handshake (HELLO) whose reply was lost on the same dead connection, with
// the same budget, inside each attempt of the command: the cost of a Redis
// that answers nothing is quadratic in maxRetries, hence a small count
// (measured: 2.2 s in all, where 8 retries up to 500 ms took 28 s).
const (
	dialTimeout  = 2 * time.Second
	ioTimeout    = 3 * time.Second
	maxRetries   = 4
	retryMin     = 20 * time.Millisecond
	retryMax     = 250 * time.Millisecond
	poolTimeout  = 4 * time.Second
	disableIdent = true
)

// IsCluster reports whether the URL names a Redis Cluster.
func IsCluster(redisURL string) bool {
	u, err := url.Parse(redisURL)
	return err == nil && u.Query().Has("addr") && !u.Query().Has("master_name")
}

// IsSentinel reports whether the URL names Sentinels watching a master.
func IsSentinel(redisURL string) bool {
	u, err := url.Parse(redisURL)
	return err == nil && u.Query().Has("master_name")
}

// Open connects to the URL with a pool of poolSize connections (0: go-redis's
// default). The asynq options describe the same server or cluster, for the
// parts of asynq (the web UI) that open their own.
func Open(redisURL string, poolSize int) (redis.UniversalClient, asynq.RedisConnOpt, error) {
	if IsSentinel(redisURL) {
		opt, err := redis.ParseFailoverURL(redisURL)
		if err != nil {
			return nil, nil, err
		}
		opt.PoolSize, opt.MaxRetries, opt.MinRetryBackoff, opt.MaxRetryBackoff = poolSize, maxRetries, retryMin, retryMax
		opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout, opt.PoolTimeout, opt.DisableIdentity = dialTimeout, ioTimeout, ioTimeout, poolTimeout, disableIdent
		return redis.NewFailoverClient(opt), asynq.RedisFailoverClientOpt{MasterName: opt.MasterName, SentinelAddrs: opt.SentinelAddrs,
			SentinelPassword: opt.SentinelPassword, Username: opt.Username, Password: opt.Password, DB: opt.DB, TLSConfig: opt.TLSConfig}, nil
	}
	if IsCluster(redisURL) {
		opt, err := redis.ParseClusterURL(redisURL)
		if err != nil {
			return nil, nil, err
		}
		opt.PoolSize, opt.MaxRetries, opt.MinRetryBackoff, opt.MaxRetryBackoff = poolSize, maxRetries, retryMin, retryMax
		opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout, opt.PoolTimeout, opt.DisableIdentity = dialTimeout, ioTimeout, ioTimeout, poolTimeout, disableIdent
		return redis.NewClusterClient(opt), asynq.RedisClusterClientOpt{Addrs: opt.Addrs, Username: opt.Username, Password: opt.Password, TLSConfig: opt.TLSConfig}, nil
	}
	opt, err := redis.ParseURL(redisURL)
	if err != nil {
		return nil, nil, err
	}
	opt.PoolSize, opt.MaxRetries, opt.MinRetryBackoff, opt.MaxRetryBackoff = poolSize, maxRetries, retryMin, retryMax
	opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout, opt.PoolTimeout, opt.DisableIdentity = dialTimeout, ioTimeout, ioTimeout, poolTimeout, disableIdent
	return redis.NewClient(opt), asynq.RedisClientOpt{Network: opt.Network, Addr: opt.Addr, Username: opt.Username, Password: opt.Password, DB: opt.DB, TLSConfig: opt.TLSConfig}, nil
}

// Describe names the server or cluster for messages, without credentials.
func Describe(redisURL string) string {
	u, err := url.Parse(redisURL)
	if err != nil {
		return "(unparseable URL)"
	}
	if name := u.Query().Get("master_name"); name != "" {
		return "master " + name + " via sentinels " + strings.Join(append([]string{u.Host}, u.Query()["addr"]...), ",")
	}
	if addrs := u.Query()["addr"]; len(addrs) > 0 {
		return "cluster " + u.Host + "," + strings.Join(addrs, ",")
	}
	if u.Host == "" {
		return u.Path
	}
	return u.Host
}
