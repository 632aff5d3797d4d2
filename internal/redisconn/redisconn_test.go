package redisconn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/purgeq/purgeq/internal/testredis"
)

// TestReadyAfterCutHandshakes: when connections lose their first reply
// (the handshake), a client still gets its first answer within the retry
// budget, a few seconds, and not the tens of seconds that unbounded
// retries cost.
func TestReadyAfterCutHandshakes(t *testing.T) {
	srv, err := testredis.Start()
	if err != nil {
		t.Fatal(err) // scripts/test requires redis-server: never a silent skip
	}
	defer srv.Close()
	// Half of all connections lose their handshake's reply.
	proxy := testredis.StartTestProxy(t, srv.Addr, testredis.ProxyOptions{Drop: 0.5, FirstOnly: true, Seed: 11})
	for i := range 6 {
		profile := map[bool]Profile{true: Worker, false: Producer}[i%2 == 0]
		rdb, _, err := Open(proxy.URL(), profile)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		err = rdb.Ping(context.Background()).Err()
		took := time.Since(start)
		rdb.Close()
		if err != nil {
			t.Fatalf("ping through cut handshakes failed after %v: %v", took, err)
		}
		// one cut handshake, one backoff, one read: not the whole retry
		// budget per handshake (19.6 s for the worker without the bound)
		if limit := handshakeBudget + retryMax + ioTimeout; took > limit {
			t.Errorf("first answer after %v, more than %v", took, limit)
		}
		t.Logf("first answer after %v (%d handshakes cut so far; outage budget %v)", took.Round(time.Millisecond), proxy.Dropped(), profile.Outage)
	}
	if proxy.Dropped() == 0 {
		t.Error("no handshake was cut: the test proves nothing")
	}
}

// TestFailsWithinBudget: with every reply lost, a command gives up after
// its retries, each on a new connection whose handshake is cut short,
// instead of retrying each handshake with the whole budget.
func TestFailsWithinBudget(t *testing.T) {
	srv, err := testredis.Start()
	if err != nil {
		t.Fatal(err) // scripts/test requires redis-server: never a silent skip
	}
	defer srv.Close()
	proxy := testredis.StartTestProxy(t, srv.Addr, testredis.ProxyOptions{Drop: 1})
	rdb, _, err := Open(proxy.URL(), Producer)
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	start := time.Now()
	if err := rdb.Ping(context.Background()).Err(); err == nil {
		t.Fatal("a ping whose every reply is lost succeeded")
	}
	took := time.Since(start)
	t.Logf("gave up after %v and %d lost replies", took.Round(time.Millisecond), proxy.Dropped())
	if n := Producer.maxRetries(); proxy.Dropped() != int64(n+1) {
		t.Errorf("%d attempts, want %d (one and %d retries)", proxy.Dropped(), n+1, n)
	}
}

func TestUnreachable(t *testing.T) {
	srv, err := testredis.Start()
	if err != nil {
		t.Fatal(err) // scripts/test requires redis-server: never a silent skip
	}
	addr := srv.Addr
	srv.Close()
	rdb, _, _ := Open("redis://"+addr+"/0", Profile{Outage: time.Millisecond})
	defer rdb.Close()
	down := rdb.Ping(context.Background()).Err()
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{down, true},
		{io.EOF, true},
		{fmt.Errorf("recording: %w", io.ErrUnexpectedEOF), true},
		{errors.New("LOADING Redis is loading the dataset in memory"), true},
		{errors.New("ERR Error running script: attempt to index a nil value"), false},
		{errors.New("OOM command not allowed when used memory > 'maxmemory'"), false},
	} {
		if got := Unreachable(tc.err); got != tc.want {
			t.Errorf("Unreachable(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
