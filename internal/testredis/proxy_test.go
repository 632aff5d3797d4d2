package testredis

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// startRedis starts a redis-server for one test; without one installed
// the test fails (scripts/test requires it), never skips silently.
func startRedis(t *testing.T) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatal("redis-server is not installed (apt-get install -y redis-server)")
	}
	s, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// proxyClient is a go-redis client through p with one connection, fast
// retries and a count of the connections it made.
func proxyClient(t *testing.T, p *Proxy, maxRetries int) (*redis.Client, *atomic.Int64) {
	t.Helper()
	dials := new(atomic.Int64)
	c := redis.NewClient(&redis.Options{
		Addr:            p.Addr(),
		PoolSize:        1,
		MaxRetries:      maxRetries,
		MinRetryBackoff: time.Millisecond,
		MaxRetryBackoff: time.Millisecond,
		Protocol:        2,
		DisableIdentity: true,
		Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	})
	t.Cleanup(func() { c.Close() })
	return c, dials
}

func TestProxyForwards(t *testing.T) {
	srv := startRedis(t)
	p := StartTestProxy(t, srv.Addr, ProxyOptions{})
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: p.Addr()}) // default handshake: HELLO, CLIENT SETINFO
	defer c.Close()

	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if v, err := c.Get(ctx, "k").Result(); err != nil || v != "v" {
		t.Fatalf("GET through the proxy = %q, %v; want v", v, err)
	}
	cmds, err := c.Pipelined(ctx, func(pp redis.Pipeliner) error {
		for range 100 {
			pp.Incr(ctx, "n")
		}
		return nil
	})
	if err != nil || cmds[99].(*redis.IntCmd).Val() != 100 {
		t.Fatalf("pipelined INCR: %v", err)
	}
	if p.URL() != "redis://"+p.Addr()+"/0" {
		t.Errorf("URL = %q", p.URL())
	}
	if p.Dropped() != 0 {
		t.Errorf("Dropped = %d with Drop 0", p.Dropped())
	}
}

func TestProxyLosesReply(t *testing.T) {
	srv := startRedis(t)
	direct := srv.Client()
	defer direct.Close()
	p := StartTestProxy(t, srv.Addr, ProxyOptions{Drop: 1})
	ctx := context.Background()

	// A raw connection: the INCR's reply is the first thing Redis sends.
	conn, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("*2\r\n$4\r\nINCR\r\n$1\r\nk\r\n")); err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(conn).ReadString('\n'); err == nil {
		t.Fatalf("got reply %q; want the connection closed", line)
	}
	if v, err := direct.Get(ctx, "k").Result(); err != nil || v != "1" {
		t.Fatalf("k in Redis = %q, %v; want 1 (the INCR ran)", v, err)
	}
	if p.Dropped() != 1 {
		t.Fatalf("Dropped = %d; want 1", p.Dropped())
	}

	// go-redis always sends HELLO on a new connection, so let the handshake
	// through, then lose the INCR's reply on the established connection.
	c, dials := proxyClient(t, p, -1)
	p.SetDrop(0)
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	p.SetDrop(1)
	if n, err := c.Incr(ctx, "k").Result(); err == nil {
		t.Fatalf("INCR through the proxy = %d; want an error", n)
	}
	if v, err := direct.Get(ctx, "k").Result(); err != nil || v != "2" {
		t.Fatalf("k in Redis = %q, %v; want 2 (the INCR ran)", v, err)
	}
	if p.Dropped() != 2 || dials.Load() != 1 {
		t.Fatalf("Dropped = %d, dials = %d; want 2 and 1 (no retry)", p.Dropped(), dials.Load())
	}
}

func TestProxyFirstOnly(t *testing.T) {
	srv := startRedis(t)
	direct := srv.Client()
	defer direct.Close()
	p := StartTestProxy(t, srv.Addr, ProxyOptions{Drop: 1, FirstOnly: true})
	ctx := context.Background()

	// Every connection loses its first reply, HELLO's, and is closed: each
	// attempt dials anew and fails in the handshake, so the SET is never
	// sent, however many retries.
	c, dials := proxyClient(t, p, 3)
	if err := c.Set(ctx, "k", "v", 0).Err(); err == nil {
		t.Fatal("SET succeeded; want every handshake cut")
	}
	if dials.Load() != 4 || p.Dropped() != 4 {
		t.Fatalf("dials = %d, Dropped = %d; want 4 and 4 (one lost handshake per attempt)", dials.Load(), p.Dropped())
	}
	if n, err := direct.Exists(ctx, "k").Result(); err != nil || n != 0 {
		t.Fatalf("EXISTS k in Redis = %d, %v; want 0 (the SET was never sent)", n, err)
	}

	// Once a connection's first reply got through, its later replies do
	// too, even at Drop 1.
	c2, dials2 := proxyClient(t, p, 0)
	p.SetDrop(0)
	if err := c2.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	p.SetDrop(1)
	for i := range 20 {
		if err := c2.Set(ctx, "k", i, 0).Err(); err != nil {
			t.Fatal(err)
		}
		if v, err := c2.Get(ctx, "k").Int(); err != nil || v != i {
			t.Fatalf("GET = %d, %v; want %d", v, err, i)
		}
	}
	if dials2.Load() != 1 || p.Dropped() != 4 {
		t.Fatalf("dials = %d, Dropped = %d; want 1 and still 4", dials2.Load(), p.Dropped())
	}
}

// With a seed, one client after another through a proxy that cuts half the
// handshakes: every SET gets through on some connection, each lost
// handshake cost exactly one connection, and the same seed loses the same
// handshakes.
func TestProxySeedRepeatable(t *testing.T) {
	srv := startRedis(t)
	direct := srv.Client()
	defer direct.Close()
	ctx := context.Background()
	const sets = 20
	run := func() int64 {
		p := StartTestProxy(t, srv.Addr, ProxyOptions{Drop: 0.5, FirstOnly: true, Seed: 7})
		defer p.Close()
		var dials int64
		for i := range sets {
			c, d := proxyClient(t, p, 10)
			if err := c.Set(ctx, "k"+strconv.Itoa(i), i, 0).Err(); err != nil {
				t.Fatalf("SET %d: %v", i, err)
			}
			c.Close()
			dials += d.Load()
		}
		if dials != p.Dropped()+sets {
			t.Fatalf("dials = %d, Dropped = %d; want dials = Dropped + %d", dials, p.Dropped(), sets)
		}
		return p.Dropped()
	}
	first, second := run(), run()
	if first == 0 || first != second {
		t.Fatalf("Dropped = %d then %d with the same seed; want equal and > 0", first, second)
	}
	if n, err := direct.DBSize(ctx).Result(); err != nil || n != sets {
		t.Fatalf("DBSIZE = %d, %v; want %d", n, err, sets)
	}
}

func TestProxyClose(t *testing.T) {
	srv := startRedis(t)
	p := StartTestProxy(t, srv.Addr, ProxyOptions{})
	conn, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		t.Fatal(err)
	}
	if line, err := r.ReadString('\n'); err != nil || line != "+PONG\r\n" {
		t.Fatalf("PING = %q, %v", line, err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	// Close waited for the proxy's goroutines, which closed the connection.
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := r.ReadByte(); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read after Close: %v; want the connection closed", err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if c, err := net.Dial("tcp", p.Addr()); err == nil {
		c.Close()
		t.Fatal("proxy still accepts after Close")
	}
}
