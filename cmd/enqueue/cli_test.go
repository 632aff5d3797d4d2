package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/purgeq/purgeq/batching"
)

// TestHelpAndVersionWithoutRedis: --help and --version of every command
// and sub-command answer on stdout, exit 0, at once, without Redis: with
// PURGE_REDIS_URL at a closed port, and at a listener that must see no
// connection. A bad flag or sub-command is still exit 2, without Redis too.
func TestHelpAndVersionWithoutRedis(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var dialed atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			dialed.Add(1)
			c.Close()
		}
	}()
	t.Setenv("PURGE_ZONES", "")
	t.Setenv("PURGE_INTAKE_TOKENS", "")

	commands := [][]string{{}, {"status"}, {"status", "0123456789abcdef01234567"}, {"dlq"}, {"dlq", "list"}, {"dlq", "retry"}, {"dlq", "drop", "some-id"}, {"serve"}, {"https://example.com/a"}}
	for _, url := range []string{"redis://127.0.0.1:1/0", "redis://" + ln.Addr().String() + "/0"} {
		t.Setenv("PURGE_REDIS_URL", url)
		for _, cmd := range commands {
			for _, flag := range []string{"--help", "-h", "-help", "--version"} {
				args := append(append([]string{}, cmd...), flag)
				start := time.Now()
				r := enqueueCmd(t, "", args...)
				took := time.Since(start)
				want := "Usage"
				if flag == "--version" {
					want = "enqueue devel\n" // a test binary has no module version
				}
				if r.code != 0 || !strings.Contains(r.stdout, want) || r.stderr != "" || took > time.Second {
					t.Errorf("%v (%s): exit %d after %s, stdout %q, stderr %q; want 0, %q on stdout, at once", args, url, r.code, took, r.stdout, r.stderr, want)
				}
			}
		}
		for _, args := range [][]string{{"--bogus"}, {"status", "--bogus"}, {"status"}, {"dlq", "list", "--bogus"}, {"dlq", "bogus"}, {"dlq", "retry"}, {"dlq"}, {"serve", "extra"}} {
			start := time.Now()
			r := enqueueCmd(t, "", args...)
			if r.code != 2 || r.stdout != "" || r.stderr == "" || time.Since(start) > time.Second {
				t.Errorf("%v: %+v; want exit 2 and why on stderr, at once", args, r)
			}
		}
	}
	if n := dialed.Load(); n != 0 {
		t.Errorf("%d connection(s) to Redis for --help, --version or usage errors", n)
	}
}

// TestProgressQuietInLogs drives the log printer (no terminal) through a
// 5-minute cooldown polled every 200 ms: a line at once for every change of
// the purged or dead count, otherwise at most one every 10 s.
func TestProgressQuietInLogs(t *testing.T) {
	start := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := start
	type printed struct {
		at   time.Duration
		line string
	}
	var lines []printed
	w := writerFunc(func(b []byte) {
		for _, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
			lines = append(lines, printed{clock.Sub(start), l})
		}
	})
	p := &progress{w: w, start: start, now: func() time.Time { return clock },
		cooldown: func() map[string]time.Duration {
			return map[string]time.Duration{"global": 5*time.Minute - clock.Sub(start)}
		}}
	// The counts change at these times (from 0/3 purged, none dead).
	changes := map[time.Duration]batching.Status{
		100 * time.Second:                      {Total: 3, Purged: 1},
		100*time.Second + 400*time.Millisecond: {Total: 3, Purged: 2},
		200 * time.Second:                      {Total: 3, Purged: 2, Dead: 1},
		299*time.Second + 800*time.Millisecond: {Total: 3, Purged: 2, Superseded: 1, Dead: 1},
	}
	st := batching.Status{Total: 3}
	for at := time.Duration(0); at < 5*time.Minute; at += 200 * time.Millisecond {
		clock = start.Add(at)
		if c, ok := changes[at]; ok {
			st = c
		}
		p.show(st)
	}
	p.end()

	if len(lines) > 300/10+len(changes)+1 {
		t.Errorf("%d lines for a 5-minute cooldown, want at most %d:\n%v", len(lines), 300/10+len(changes)+1, lines)
	}
	if lines[0].at != 0 || lines[0].line != "enqueue: 0/3 purged, global cooldown 5m0s" {
		t.Errorf("first line %+v, want the status at once", lines[0])
	}
	for at, c := range changes {
		want := fmt.Sprintf("enqueue: %d/3 purged", c.Purged+c.Superseded)
		if c.Dead > 0 {
			want += fmt.Sprintf(", %d dead-lettered", c.Dead)
		}
		found := false
		for _, l := range lines {
			found = found || (l.at == at && strings.HasPrefix(l.line, want+", global cooldown"))
		}
		if !found {
			t.Errorf("no line %q at %s, when the counts changed:\n%v", want, at, lines)
		}
	}
	for i := 1; i < len(lines); i++ {
		if _, changed := changes[lines[i].at]; !changed && lines[i].at-lines[i-1].at < quietEvery {
			t.Errorf("line %q only %s after the previous one, and no count changed", lines[i].line, lines[i].at-lines[i-1].at)
		}
	}
}

type writerFunc func([]byte)

func (f writerFunc) Write(b []byte) (int, error) { f(b); return len(b), nil }

// TestInterruptedWaitStaysQueued: an interrupt (the context run is given
// ends) while --wait waits says the request stays queued, with its id, and
// exits 1; the request is still queued.
func TestInterruptedWaitStaysQueued(t *testing.T) {
	rdb := setup(t) // no worker: nothing is purged
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Interrupt as soon as the request is queued.
	stderr := &watchWriter{want: "queued 1 item(s)", seen: cancel}
	var stdout bytes.Buffer
	start := time.Now()
	code := run(ctx, []string{"--wait", "--timeout", "1m", "https://example.com/a"}, strings.NewReader(""), &stdout, stderr)
	took := time.Since(start)
	id := strings.TrimSpace(stdout.String())
	msg := stderr.String()
	if code != 1 || len(id) != 24 || took > 10*time.Second {
		t.Fatalf("exit %d after %s, stdout %q, stderr %q; want 1, the id, at once", code, took, stdout.String(), msg)
	}
	for _, want := range []string{"interrupted", "request " + id + " stays queued", "enqueue status " + id} {
		if !strings.Contains(msg, want) {
			t.Errorf("stderr lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "not finished after") {
		t.Errorf("an interrupt reported as the timeout:\n%s", msg)
	}
	if n := pending(t, rdb); n != 1 {
		t.Errorf("%d requests pending after the interrupt, want 1 (only the waiting stops)", n)
	}
}

// watchWriter collects what is written and calls seen once want appears.
type watchWriter struct {
	mu   sync.Mutex
	b    bytes.Buffer
	want string
	seen func()
	once sync.Once
}

func (w *watchWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b.Write(p)
	if strings.Contains(w.b.String(), w.want) {
		w.once.Do(w.seen)
	}
	return len(p), nil
}

func (w *watchWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}
