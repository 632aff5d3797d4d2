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

// Tuning adjusts the connection pool and retries; zero values keep go-redis's defaults.
type Tuning struct {
	PoolSize                         int
	MaxRetries                       int
	MinRetryBackoff, MaxRetryBackoff time.Duration
}

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

// Open connects to the URL. The asynq options describe the same server or
// cluster, for the parts of asynq (the web UI) that open their own.
func Open(redisURL string, t Tuning) (redis.UniversalClient, asynq.RedisConnOpt, error) {
	if IsSentinel(redisURL) {
		opt, err := redis.ParseFailoverURL(redisURL)
		if err != nil {
			return nil, nil, err
		}
		opt.PoolSize, opt.MaxRetries, opt.MinRetryBackoff, opt.MaxRetryBackoff = t.PoolSize, t.MaxRetries, t.MinRetryBackoff, t.MaxRetryBackoff
		return redis.NewFailoverClient(opt), asynq.RedisFailoverClientOpt{MasterName: opt.MasterName, SentinelAddrs: opt.SentinelAddrs,
			SentinelPassword: opt.SentinelPassword, Username: opt.Username, Password: opt.Password, DB: opt.DB, TLSConfig: opt.TLSConfig}, nil
	}
	if IsCluster(redisURL) {
		opt, err := redis.ParseClusterURL(redisURL)
		if err != nil {
			return nil, nil, err
		}
		opt.PoolSize, opt.MaxRetries, opt.MinRetryBackoff, opt.MaxRetryBackoff = t.PoolSize, t.MaxRetries, t.MinRetryBackoff, t.MaxRetryBackoff
		return redis.NewClusterClient(opt), asynq.RedisClusterClientOpt{Addrs: opt.Addrs, Username: opt.Username, Password: opt.Password, TLSConfig: opt.TLSConfig}, nil
	}
	opt, err := redis.ParseURL(redisURL)
	if err != nil {
		return nil, nil, err
	}
	opt.PoolSize, opt.MaxRetries, opt.MinRetryBackoff, opt.MaxRetryBackoff = t.PoolSize, t.MaxRetries, t.MinRetryBackoff, t.MaxRetryBackoff
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
