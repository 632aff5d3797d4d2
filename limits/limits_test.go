package limits_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/purgeq/purgeq/internal/testredis"
	"github.com/purgeq/purgeq/limits"
	"github.com/purgeq/purgeq/limits/rate"
	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/purge/cftest"
)

var srv *testredis.Server

func TestMain(m *testing.M) { testredis.Main(m, &srv) }

// roomy is a config whose buckets never get in the way.
func roomy(scope string, global rate.Rate, guard time.Duration) limits.Config {
	big := limits.Bucket{Rate: rate.Per(1_000_000, time.Second), Burst: 1_000_000}
	return limits.Config{Token: scope, Global: global, Guard: guard, GlobalCountsFiles: true, Flex: big, URL: big}
}

func newLimiter(t testing.TB, cfg limits.Config) *limits.Limiter {
	t.Helper()
	l, err := limits.New(testredis.Connect(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func scopeName(t testing.TB) string { return fmt.Sprintf("%s-%d", t.Name(), time.Now().UnixNano()) }

func TestNewRejectsBadConfig(t *testing.T) {
	_, err := limits.New(testredis.Connect(t), limits.Config{Flex: limits.Bucket{Burst: 1}})
	for _, want := range []string{"Token (the API token's fingerprint) is empty", "global limit", "flex bucket", "URL bucket"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not mention %q", err, want)
		}
	}
}

// TestAllOrNothing: the window has room, the URL bucket has not: nothing
// is taken, and the answer is the bucket's wait.
func TestAllOrNothing(t *testing.T) {
	cfg := roomy(scopeName(t), rate.Per(10, time.Minute), 0)
	cfg.URL = limits.Bucket{Rate: rate.Per(10, time.Second), Burst: 100}
	l := newLimiter(t, cfg)
	ctx := context.Background()
	if r, err := l.Peek(ctx, limits.Need{Kind: purge.Files, Items: 100}); err != nil || !r.OK || r.GlobalRemaining != 10 {
		t.Fatalf("peek: %+v, %v; want OK with 10 slots left", r, err)
	}
	if r, err := l.Acquire(ctx, limits.Need{Kind: purge.Files, Items: 100}); err != nil || !r.OK || r.GlobalRemaining != 9 {
		t.Fatalf("first: %+v, %v", r, err)
	}
	r, err := l.Acquire(ctx, limits.Need{Kind: purge.Files, Items: 50})
	if err != nil || r.OK || r.Blocker != "url" || r.Wait < 4*time.Second || r.Wait > 5*time.Second {
		t.Fatalf("second: %+v, %v; want a ~5s wait on the url bucket", r, err)
	}
	if p, _ := l.Peek(ctx, limits.Need{Kind: purge.Tags, Items: 1}); !p.OK || p.GlobalRemaining != 9 {
		t.Errorf("the failed call consumed a global slot: %d remain, want 9", p.GlobalRemaining)
	}
	if _, err := l.Acquire(ctx, limits.Need{Kind: purge.Files, Items: 101}); err == nil {
		t.Error("a call larger than the bucket was not refused")
	}
}

// TestBucketsNoLeakUnderConcurrency: 40 goroutines on separate connections
// race for a bucket of 60 tokens that barely refills: exactly 60 succeed.
func TestBucketsNoLeakUnderConcurrency(t *testing.T) {
	cfg := roomy(scopeName(t), rate.Per(1_000_000, time.Second), 0)
	cfg.Flex = limits.Bucket{Rate: rate.Per(1, time.Hour), Burst: 60}
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for range 40 {
		l := newLimiter(t, cfg)
		wg.Go(func() {
			for range 5 {
				r, err := l.Acquire(context.Background(), limits.Need{Kind: purge.Hosts, Items: 3})
				if err != nil {
					t.Error(err)
					return
				}
				if r.OK {
					mu.Lock()
					ok++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if ok != 60 {
		t.Errorf("%d acquisitions succeeded, want exactly 60", ok)
	}
}

// TestCooldown: a cooldown stops every acquirer until it ends and not
// longer; a shorter second cooldown does not shorten it.
func TestCooldown(t *testing.T) {
	cfg := roomy(scopeName(t), rate.Per(1000, time.Second), 0)
	l := newLimiter(t, cfg)
	ctx := context.Background()
	end, err := l.Cooldown(ctx, purge.ScopeGlobal, 400*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if end2, _ := l.Cooldown(ctx, purge.ScopeGlobal, 50*time.Millisecond); !end2.Equal(end) {
		t.Errorf("a shorter cooldown moved the end from %v to %v", end, end2)
	}
	// A bucket cooldown does not stop the other bucket.
	if _, err := l.Cooldown(ctx, purge.ScopeURL, time.Hour); err != nil {
		t.Fatal(err)
	}
	if st, _ := l.State(ctx); st.Cooldowns[purge.ScopeGlobal].IsZero() {
		t.Errorf("State does not show the global cooldown: %+v", st)
	}

	firsts := make(chan time.Time, 6)
	var wg sync.WaitGroup
	for i := range 6 {
		acq := newLimiter(t, cfg)
		kind := []purge.Kind{purge.Tags, purge.Hosts, purge.Everything}[i%3]
		wg.Go(func() {
			for {
				r, err := acq.Acquire(ctx, limits.Need{Kind: kind, Items: 1})
				if err != nil {
					t.Error(err)
					return
				}
				if r.OK {
					firsts <- r.At
					return
				}
				if !strings.HasPrefix(r.Blocker, "cooldown:global") {
					t.Errorf("blocker %q, want cooldown:global", r.Blocker)
				}
				time.Sleep(min(r.Wait, 20*time.Millisecond))
			}
		})
	}
	wg.Wait()
	close(firsts)
	for at := range firsts {
		if at.Before(end) || at.Sub(end) > 60*time.Millisecond {
			t.Errorf("first acquisition at %v, cooldown ended %v (diff %v)", at, end, at.Sub(end))
		}
	}
	r, _ := l.Peek(ctx, limits.Need{Kind: purge.Files, Items: 1})
	if r.OK || r.Blocker != "cooldown:url" {
		t.Errorf("URL purges during the URL cooldown: %+v", r)
	}
}

// TestBucketCooldownEmptiesBucket: after a 1134 the local bucket holds no
// tokens either, so the calls waiting out the pause do not all fire when
// it ends: they leave at the bucket's refill rate.
func TestBucketCooldownEmptiesBucket(t *testing.T) {
	cfg := roomy(scopeName(t), rate.Per(1000, time.Second), 0)
	cfg.Flex = limits.Bucket{Rate: rate.Per(10, time.Second), Burst: 50}
	l := newLimiter(t, cfg)
	ctx := context.Background()
	if r, _ := l.Peek(ctx, limits.Need{Kind: purge.Tags, Items: 1}); !r.OK || r.BucketTokens < 49 {
		t.Fatalf("a fresh bucket: %+v", r)
	}
	end, err := l.Cooldown(ctx, purge.ScopeFlex, 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(end))
	granted := 0
	for {
		r, err := l.Acquire(ctx, limits.Need{Kind: purge.Tags, Items: 1})
		if err != nil {
			t.Fatal(err)
		}
		if !r.OK {
			break
		}
		granted++
	}
	// 50 ms of cooldown and a few of this loop refill at most a token or two
	if granted > 3 {
		t.Errorf("%d calls went at once after the pause ended; the bucket kept its tokens", granted)
	}
}

// hammer acquires single tag calls from n goroutines until stop, sleeping
// the wait it is told (shifted by up to ±skew, as a process whose clock is
// off wakes early or late), and returns the server times of its successes.
func hammer(t testing.TB, cfg limits.Config, n int, d, skew time.Duration) []time.Time {
	var mu sync.Mutex
	var got []time.Time
	var wg sync.WaitGroup
	stop := time.Now().Add(d)
	for range n {
		l := newLimiter(t, cfg)
		wg.Go(func() {
			for time.Now().Before(stop) {
				r, err := l.Acquire(context.Background(), limits.Need{Kind: purge.Tags, Items: 1})
				if err != nil {
					t.Error(err)
					return
				}
				if r.OK {
					mu.Lock()
					got = append(got, r.At)
					mu.Unlock()
					continue
				}
				offset := time.Duration(0)
				if skew > 0 {
					offset = time.Duration(rand.Int64N(int64(2*skew))) - skew
				}
				time.Sleep(max(0, r.Wait+offset))
			}
		})
	}
	wg.Wait()
	return got
}

const (
	childEnv = "LIMITS_TEST_CHILD_SCOPE"
	skewEnv  = "LIMITS_TEST_CHILD_SKEW"
)

// TestWindowAcrossProcesses: three processes of eight goroutines each
// hammer one window. No interval of the window's length (plus guard) ever
// holds more than the limit, and at least 97% of the limit is used.
func TestWindowAcrossProcesses(t *testing.T) {
	acrossProcesses(t, "TestWindowAcrossProcesses", 0, 0.97)
}

// TestSkewedClocks: the same with every process waking up to ±150 ms early
// or late, as processes whose clocks are off by that much would. The
// limiter reads only the Redis server's clock, so the window still holds;
// early wakers are simply refused.
func TestSkewedClocks(t *testing.T) {
	acrossProcesses(t, "TestSkewedClocks", 150*time.Millisecond, 0.90)
}

func acrossProcesses(t *testing.T, name string, skew time.Duration, minUse float64) {
	global, guard := rate.Per(100, 500*time.Millisecond), 5*time.Millisecond
	run := 3 * time.Second
	if scope := os.Getenv(childEnv); scope != "" {
		skew, _ := time.ParseDuration(os.Getenv(skewEnv))
		times := hammer(t, roomy(scope, global, guard), 8, run, skew)
		json.NewEncoder(os.Stdout).Encode(times)
		return
	}
	scope := scopeName(t)
	type out struct {
		b   []byte
		err error
	}
	results := make(chan out, 3)
	for range 3 {
		go func() {
			cmd := exec.Command(os.Args[0], "-test.run=^"+name+"$", "-test.count=1")
			cmd.Env = append(os.Environ(), childEnv+"="+scope, skewEnv+"="+skew.String(), testredis.ChildEnv+"=1")
			b, err := cmd.Output()
			results <- out{b, err}
		}()
	}
	var all []time.Time
	for range 3 {
		r := <-results
		if r.err != nil {
			t.Fatalf("child: %v\n%s", r.err, r.b)
		}
		line := r.b[:strings.IndexByte(string(r.b), '\n')]
		var times []time.Time
		if err := json.Unmarshal(line, &times); err != nil {
			t.Fatalf("child output %q: %v", r.b, err)
		}
		if len(times) == 0 {
			t.Fatal("a child acquired nothing")
		}
		all = append(all, times...)
	}
	checkWindow(t, all, global, guard, minUse)
}

// checkWindow asserts the sliding-window property and the utilisation.
func checkWindow(t *testing.T, times []time.Time, global rate.Rate, guard time.Duration, minUse float64) {
	t.Helper()
	sort.Slice(times, func(i, j int) bool { return times[i].Before(times[j]) })
	most, lo := 0, 0
	for hi := range times {
		for times[hi].Sub(times[lo]) >= global.Per+guard {
			lo++
		}
		most = max(most, hi-lo+1)
	}
	if most > global.N {
		t.Errorf("%d acquisitions in one window of %v; the limit is %d", most, global.Per+guard, global.N)
	}
	windows := int(times[len(times)-1].Sub(times[0]) / global.Per)
	used := 0
	for _, at := range times {
		if at.Sub(times[0]) < time.Duration(windows)*global.Per {
			used++
		}
	}
	ratio := float64(used) / float64(windows*global.N)
	t.Logf("%d acquisitions; most in one window %d of %d; utilisation over %d windows %.3f", len(times), most, global.N, windows, ratio)
	if ratio < minUse {
		t.Errorf("utilisation %.3f, want at least %.2f", ratio, minUse)
	}
}

// TestGuardCoversArrivalJitter: calls acquired here reach the simulator
// after a random delay of up to 15 ms, reordering them; with a 50 ms guard
// the simulator never sees its global window or its flex bucket exceeded.
// (The guard leaves 35 ms for what a busy machine adds to the injected
// delay: 12 goroutines beside a -race build and a redis-server on 2 cores
// stall for more than 5 ms.)
func TestGuardCoversArrivalJitter(t *testing.T) {
	roomyBucket := limits.Bucket{Rate: rate.Per(100000, time.Second), Burst: 100000}
	for _, tt := range []struct {
		name   string
		global rate.Rate
		flex   limits.Bucket
	}{
		{"global window", rate.Per(40, 300*time.Millisecond), roomyBucket},
		{"flex bucket", rate.Per(100000, time.Second), limits.Bucket{Rate: rate.Per(100, time.Second), Burst: 10}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sim := cftest.NewServer(cftest.Config{Token: "tok", Zones: []string{"z"}, GlobalLimit: tt.global, Block: time.Second,
				Plan: purge.Plan{MaxFiles: 100, MaxFlex: 100, FlexRate: tt.flex.Rate, FlexBurst: tt.flex.Burst, URLRate: roomyBucket.Rate, URLBurst: roomyBucket.Burst}})
			defer sim.Close()
			client, err := purge.NewClient(purge.ClientConfig{BaseURL: sim.URL, Token: "tok"})
			if err != nil {
				t.Fatal(err)
			}
			cfg := roomy(scopeName(t), tt.global, 50*time.Millisecond)
			cfg.Flex = tt.flex
			var wg sync.WaitGroup
			stop := time.Now().Add(2 * time.Second)
			for range 12 {
				l := newLimiter(t, cfg)
				wg.Go(func() {
					for time.Now().Before(stop) {
						r, err := l.Acquire(context.Background(), limits.Need{Kind: purge.Tags, Items: 1})
						if err != nil {
							t.Error(err)
							return
						}
						if !r.OK {
							time.Sleep(r.Wait)
							continue
						}
						time.Sleep(time.Duration(rand.IntN(15_000)) * time.Microsecond)
						if _, err := client.Purge(context.Background(), "z", purge.Batch{Kind: purge.Tags, Items: []string{"t"}}); err != nil {
							t.Errorf("purge: %v", err)
						}
					}
				})
			}
			wg.Wait()
			st := sim.Stats()
			t.Logf("simulator: %+v", st)
			if st.Exceeded != 0 || st.Global429 != 0 || st.Bucket429 != 0 || st.MaxInWindow > tt.global.N {
				t.Errorf("the simulator saw a limit exceeded: %+v", st)
			}
			if st.Accepted < 150 {
				t.Errorf("only %d calls in 2s; want at least 150", st.Accepted)
			}
		})
	}
}

func TestCooldownFor(t *testing.T) {
	cfg := roomy("x", rate.Per(10, time.Second), 0)
	cfg.Flex = limits.Bucket{Rate: rate.Per(5, time.Minute), Burst: 25}
	cfg.URL = limits.Bucket{Rate: rate.Per(800, time.Second), Burst: 800}
	l, err := limits.New(testredis.Connect(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		err  purge.Error
		call limits.Need
		want time.Duration
	}{
		{purge.Error{Scope: purge.ScopeGlobal}, limits.Need{Kind: purge.Tags, Items: 1}, 5 * time.Minute},
		{purge.Error{Scope: purge.ScopeGlobal, RetryAfter: 10 * time.Minute}, limits.Need{Kind: purge.Tags, Items: 1}, 10 * time.Minute},
		{purge.Error{Scope: purge.ScopeFlex, RetryAfter: 7 * time.Second}, limits.Need{Kind: purge.Tags, Items: 1}, 7 * time.Second},
		{purge.Error{Scope: purge.ScopeFlex}, limits.Need{Kind: purge.Tags, Items: 1}, 12 * time.Second},
		{purge.Error{Scope: purge.ScopeURL}, limits.Need{Kind: purge.Files, Items: 400}, 500 * time.Millisecond},
		// a Retry-After of a year is clamped
		{purge.Error{Scope: purge.ScopeGlobal, RetryAfter: 365 * 24 * time.Hour}, limits.Need{Kind: purge.Tags, Items: 1}, limits.MaxRetryAfter},
		{purge.Error{Scope: purge.ScopeFlex, RetryAfter: 365 * 24 * time.Hour}, limits.Need{Kind: purge.Tags, Items: 1}, limits.MaxRetryAfter},
	}
	for _, tt := range tests {
		if got := l.CooldownFor(&tt.err, tt.call, 5*time.Minute); got != tt.want {
			t.Errorf("CooldownFor(%+v, %+v) = %v, want %v", tt.err, tt.call, got, tt.want)
		}
	}
}

// BenchmarkAcquire measures acquisitions per second through the script on
// the test's redis-server, from parallel goroutines.
func BenchmarkAcquire(b *testing.B) {
	l := newLimiter(b, roomy(scopeName(b), rate.Per(1_000_000_000, time.Second), 0))
	b.SetParallelism(16) // many workers share one Redis
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if r, err := l.Acquire(context.Background(), limits.Need{Kind: purge.Files, Items: 1}); err != nil || !r.OK {
				b.Fatal(r, err)
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "acquires/s")
}

// TestProducerWindows: a producer's items per window are shared by every
// intake process; beyond them, the wait until enough has left the window.
func TestProducerWindows(t *testing.T) {
	ctx := context.Background()
	a, b := limits.NewProducerWindows(testredis.Connect(t)), limits.NewProducerWindows(testredis.Connect(t))
	r := rate.Per(10, time.Second)
	name := scopeName(t)
	if ok, _, err := a.Take(ctx, name, 6, r); !ok || err != nil {
		t.Fatalf("6 of 10: %v, %v", ok, err)
	}
	ok, wait, err := b.Take(ctx, name, 5, r)
	if ok || err != nil || wait <= 0 || wait > time.Second {
		t.Errorf("5 more through another process: ok %v, wait %v, %v; want refused for at most 1s", ok, wait, err)
	}
	if ok, _, err := b.Take(ctx, name, 4, r); !ok || err != nil {
		t.Errorf("4 more: %v, %v", ok, err)
	}
	if ok, _, err := a.Take(ctx, "other-"+name, 10, r); !ok || err != nil {
		t.Errorf("another producer's window: %v, %v", ok, err)
	}
	if _, _, err := a.Take(ctx, name, 11, r); err == nil {
		t.Error("a request larger than the rate was not refused outright")
	}
}
