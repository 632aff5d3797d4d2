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
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// Profile is what a process needs of Redis when it stops answering.
type Profile struct {
	// PoolSize is the most connections (0: go-redis's default).
	PoolSize int
	// Outage is how long a command keeps retrying (roughly). Workers ride
	// out a restart or failover inside each command: asynq v0.26 turns any
	// of its own writes that fails into a task stuck until its lease
	// expires (30–90 s). Producers answer someone (a deploy hook, a
	// webhook) who is better told soon; their writes are safe to repeat.
	Outage time.Duration
}

// Worker and Producer are the two profiles.
var (
	Worker   = Profile{Outage: 20 * time.Second}
	Producer = Profile{Outage: 2 * time.Second}
)

// The one connection configuration of the worker, the CLI and the intake.
// Every round trip is bounded: dial, read and write timeouts; go-redis
// sends a command whose reply was lost again on a new connection (every
// write of this project is safe twice), with backoff between retryMin and
// retryMax, for the profile's Outage; the handshake sends no CLIENT
// SETINFO (one reply fewer to lose) and its HELLO gets handshakeBudget:
// go-redis v9.14 retries a HELLO whose reply was lost on the same dead
// connection with the whole retry budget, inside each attempt of the
// command, so one lost handshake reply cost a worker 21 s.
const (
	dialTimeout     = 2 * time.Second
	ioTimeout       = 3 * time.Second
	poolTimeout     = 4 * time.Second
	retryMin        = 50 * time.Millisecond
	retryMax        = time.Second
	handshakeBudget = 500 * time.Millisecond
)

// maxRetries is the retry count whose backoff adds up to about p.Outage.
func (p Profile) maxRetries() int {
	n, sum := 0, time.Duration(0)
	for sum < p.Outage {
		n++
		sum += min(retryMax, retryMin<<min(n, 20))
	}
	return n
}

// handshake cuts go-redis's retries of a connection's HELLO short and
// makes the connection fail with io.EOF, which the command then retries
// on a new connection.
type handshake struct{}

func (handshake) DialHook(next redis.DialHook) redis.DialHook { return next }

func (handshake) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (handshake) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() != "hello" {
			return next(ctx, cmd)
		}
		hctx, cancel := context.WithTimeout(ctx, handshakeBudget)
		defer cancel()
		err := next(hctx, cmd)
		var answered redis.Error // an answer (an old server refusing HELLO) stays
		if err != nil && !errors.As(err, &answered) && hctx.Err() != nil && ctx.Err() == nil {
			err = io.EOF // go-redis retries io.EOF itself, on a new connection
			cmd.SetErr(err)
		}
		return err
	}
}

// Unreachable reports whether err means Redis did not answer (a refused or
// cut connection, a timeout, a server loading or failing over), as opposed
// to an answer refusing the command.
func Unreachable(err error) bool {
	var ne net.Error
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, redis.ErrPoolTimeout) ||
		errors.Is(err, redis.ErrClosed) || errors.As(err, &ne) {
		return true
	}
	for _, p := range []string{"LOADING ", "READONLY ", "MASTERDOWN ", "CLUSTERDOWN ", "TRYAGAIN "} {
		if strings.Contains(err.Error(), p) {
			return true
		}
	}
	return false
}

// WaitReady pings until Redis answers or limit has passed.
func WaitReady(ctx context.Context, rdb redis.UniversalClient, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		err := rdb.Ping(ctx).Err()
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
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

// Open connects to the URL with the profile. The asynq options describe the
// same server or cluster, for the parts of asynq (the web UI) that open
// their own.
func Open(redisURL string, p Profile) (redis.UniversalClient, asynq.RedisConnOpt, error) {
	poolSize, maxRetries := p.PoolSize, p.maxRetries()
	if IsSentinel(redisURL) {
		opt, err := redis.ParseFailoverURL(redisURL)
		if err != nil {
			return nil, nil, err
		}
		opt.PoolSize, opt.MaxRetries, opt.MinRetryBackoff, opt.MaxRetryBackoff = poolSize, maxRetries, retryMin, retryMax
		opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout, opt.PoolTimeout, opt.DisableIdentity = dialTimeout, ioTimeout, ioTimeout, poolTimeout, true
		c := redis.NewFailoverClient(opt)
		c.AddHook(handshake{})
		return c, asynq.RedisFailoverClientOpt{MasterName: opt.MasterName, SentinelAddrs: opt.SentinelAddrs,
			SentinelPassword: opt.SentinelPassword, Username: opt.Username, Password: opt.Password, DB: opt.DB, TLSConfig: opt.TLSConfig}, nil
	}
	if IsCluster(redisURL) {
		opt, err := redis.ParseClusterURL(redisURL)
		if err != nil {
			return nil, nil, err
		}
		opt.PoolSize, opt.MaxRetries, opt.MinRetryBackoff, opt.MaxRetryBackoff = poolSize, maxRetries, retryMin, retryMax
		opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout, opt.PoolTimeout, opt.DisableIdentity = dialTimeout, ioTimeout, ioTimeout, poolTimeout, true
		opt.NewClient = func(o *redis.Options) *redis.Client {
			c := redis.NewClient(o)
			c.AddHook(handshake{})
			return c
		}
		return redis.NewClusterClient(opt), asynq.RedisClusterClientOpt{Addrs: opt.Addrs, Username: opt.Username, Password: opt.Password, TLSConfig: opt.TLSConfig}, nil
	}
	opt, err := redis.ParseURL(redisURL)
	if err != nil {
		return nil, nil, err
	}
	opt.PoolSize, opt.MaxRetries, opt.MinRetryBackoff, opt.MaxRetryBackoff = poolSize, maxRetries, retryMin, retryMax
	opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout, opt.PoolTimeout, opt.DisableIdentity = dialTimeout, ioTimeout, ioTimeout, poolTimeout, true
	c := redis.NewClient(opt)
	c.AddHook(handshake{})
	return c, asynq.RedisClientOpt{Network: opt.Network, Addr: opt.Addr, Username: opt.Username, Password: opt.Password, DB: opt.DB, TLSConfig: opt.TLSConfig}, nil
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
