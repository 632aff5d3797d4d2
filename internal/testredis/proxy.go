package testredis

import (
	"context"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Proxy is a TCP proxy in front of a Redis server that loses replies: it
// forwards every command to Redis and, with a given probability, closes the
// client connection (and its upstream one) after Redis has answered instead
// of passing the answer on, as a network blip would. The command ran; the
// client never learns its outcome.
//
// A reply is one read from the upstream connection: a chunk of bytes from
// Redis, which may hold one reply, several (a pipeline) or part of a large
// one.
type Proxy struct {
	target    string
	ln        net.Listener
	firstOnly bool
	drop      atomic.Uint64 // math.Float64bits of the probability
	dropped   atomic.Int64
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error

	mu     sync.Mutex // guards rng, conns and closed
	rng    *rand.Rand
	conns  map[net.Conn]struct{}
	closed bool
}

// ProxyOptions configures a Proxy.
type ProxyOptions struct {
	// Drop is the probability (0–1) that a reply read from Redis is lost:
	// the client connection is closed instead of the reply being forwarded.
	Drop float64
	// FirstOnly drops only the first reply of each client connection (a cut
	// connection handshake: HELLO / CLIENT SETINFO / AUTH), with probability
	// Drop (1 = always).
	FirstOnly bool
	// Seed makes the drops repeatable: the same seed, probabilities and
	// order of replies lose the same replies. Probabilities 0 and 1 draw
	// nothing.
	Seed uint64
}

// StartProxy listens on a free loopback port and forwards every connection
// to the Redis server at target (host:port).
func StartProxy(target string, o ProxyOptions) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{
		target:    target,
		ln:        ln,
		firstOnly: o.FirstOnly,
		ctx:       ctx,
		cancel:    cancel,
		rng:       rand.New(rand.NewPCG(o.Seed, o.Seed^0x9e3779b97f4a7c15)),
		conns:     map[net.Conn]struct{}{},
	}
	p.SetDrop(o.Drop)
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// URL is the proxy's redis:// URL (database 0).
func (p *Proxy) URL() string { return "redis://" + p.Addr() + "/0" }

// SetDrop changes the probability that a reply is lost; it applies to
// replies read from now on. Safe for concurrent use.
func (p *Proxy) SetDrop(prob float64) { p.drop.Store(math.Float64bits(prob)) }

// Dropped is the number of replies lost so far.
func (p *Proxy) Dropped() int64 { return p.dropped.Load() }

// Close stops listening, closes every connection and waits for the
// proxy's goroutines to end. Calling it again does nothing.
func (p *Proxy) Close() error {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.closed = true
		conns := p.conns
		p.conns = nil
		p.mu.Unlock()
		p.cancel()
		p.closeErr = p.ln.Close()
		for c := range conns {
			c.Close()
		}
		p.wg.Wait()
	})
	return p.closeErr
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(5 * time.Millisecond) // e.g. too many open files
			continue
		}
		if !p.track(c) {
			c.Close()
			return
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

// track registers c so that Close closes it; false once the proxy is closed.
func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) forget(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		delete(p.conns, c)
	}
}

// serve connects client to Redis: commands are copied upstream as they
// come, replies are passed back unless lost.
func (p *Proxy) serve(client net.Conn) {
	defer p.wg.Done()
	var d net.Dialer
	upstream, err := d.DialContext(p.ctx, "tcp", p.target)
	if err != nil || !p.track(upstream) {
		if upstream != nil {
			upstream.Close()
		}
		client.Close()
		p.forget(client)
		return
	}
	var once sync.Once
	cut := func() {
		once.Do(func() {
			client.Close()
			upstream.Close()
			p.forget(client, upstream)
		})
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		io.Copy(upstream, client)
		cut()
	}()
	defer cut()
	buf := make([]byte, 32<<10)
	for first := true; ; first = false {
		n, err := upstream.Read(buf)
		if n > 0 {
			// Redis has answered, so the command ran: losing the reply now
			// leaves the client not knowing the outcome.
			if p.lose(first) {
				p.dropped.Add(1)
				return
			}
			if _, err := client.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// lose decides whether a reply is lost.
func (p *Proxy) lose(first bool) bool {
	if p.firstOnly && !first {
		return false
	}
	prob := math.Float64frombits(p.drop.Load())
	switch {
	case prob <= 0:
		return false
	case prob >= 1:
		return true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rng.Float64() < prob
}

// StartTestProxy starts a Proxy in front of target for a test and closes it
// when the test ends.
func StartTestProxy(t testing.TB, target string, o ProxyOptions) *Proxy {
	t.Helper()
	p, err := StartProxy(target, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}
