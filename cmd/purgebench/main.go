// Command purgebench replays recorded workloads through several purge
// strategies side by side — this project with 1 and 4 workers, naive
// per-event calls, chunk-by-30 without a queue, and a 4-requests-a-second
// throttle with retries in 4 processes — against the Cloudflare simulator
// (free plan, time scaled down) and a real redis-server, and reports calls
// against the lower bound, items purged, 429s, blocks, time to the last
// purge, latency and memory, as a table, JSON and one PNG chart a workload.
//
//	cd cmd/purgebench && go run . [-size 1] [-scale 10] [-workloads cms-burst,deploy] [-out bench-results]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/purgeq/purgeq/batching"
	"github.com/purgeq/purgeq/internal/testredis"
	"github.com/purgeq/purgeq/internal/worker"
	"github.com/purgeq/purgeq/limits/rate"
	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/purge/cftest"
)

const token = "bench-token"

// configuredLimit is the global limit purgeq's workers are given per 5
// minutes: below Cloudflare's 1,200, leaving headroom (PURGE_GLOBAL_LIMIT's default).
const configuredLimit = 1000

func zoneID(name string) string { return "zone-" + strings.Split(name, ".")[0] }

// bench is the shared harness of one run.
type bench struct {
	scale    float64
	plan     purge.Plan
	global   rate.Rate
	block    time.Duration
	rdb      *redis.Client
	url      string // the Redis URL
	sim      *cftest.Server
	api      *purge.Client
	requests *batching.Requests
}

// workerEnv configures this project's workers for the scaled-down account.
func (b *bench) workerEnv() map[string]string {
	zones := []string{}
	for _, z := range zoneNames {
		zones = append(zones, z+"="+zoneID(z))
	}
	return map[string]string{
		"PURGE_REDIS_URL": b.url, "PURGE_CLOUDFLARE_API_URL": b.sim.URL, "PURGE_CLOUDFLARE_API_TOKEN": token,
		"PURGE_ZONES": strings.Join(zones, ","), "PURGE_PLAN": "free", "PURGE_HTTP_ADDR": "127.0.0.1:0", "PURGE_LOG_LEVEL": "error",
		"PURGE_GLOBAL_LIMIT": rate.Per(configuredLimit, b.global.Per).String(), "PURGE_COOLDOWN": b.block.String(),
		"PURGE_FLEX_LIMIT": b.plan.FlexRate.String(), "PURGE_FLEX_BURST": fmt.Sprint(b.plan.FlexBurst),
		"PURGE_URL_LIMIT": b.plan.URLRate.String(), "PURGE_URL_BURST": fmt.Sprint(b.plan.URLBurst),
		"PURGE_BATCH_WAIT":  time.Duration(float64(2*time.Second) / b.scale).String(),
		"PURGE_INLINE_WAIT": (2 * time.Second).String(),
	}
}

// result is one strategy's run of one workload.
type result struct {
	Workload    string  `json:"workload"`
	Strategy    string  `json:"strategy"`
	Scale       float64 `json:"time_scale"`
	Calls       int     `json:"calls"`
	LowerBound  int     `json:"lower_bound"`
	Ratio       float64 `json:"calls_per_lower_bound"`
	Requested   int     `json:"unique_items_requested"`
	Purged      int     `json:"unique_items_purged"`
	RateLimited int     `json:"responses_429"`
	Blocks      int     `json:"blocks_triggered"`
	// Durations are in the workload's real time (scaled back up).
	BlockedSeconds float64 `json:"blocked_seconds"`
	LastPurgeSec   float64 `json:"last_purge_seconds"`
	P50Sec         float64 `json:"latency_p50_seconds"`
	P99Sec         float64 `json:"latency_p99_seconds"`
	// BusiestWindow is the most accepted calls in any 5-minute window;
	// WindowUse divides it by purgeq's configured limit.
	BusiestWindow int     `json:"busiest_window_calls"`
	WindowUse     float64 `json:"busiest_window_per_configured_limit"`
	RedisPeakMiB  float64 `json:"redis_peak_mib"`
	// HeapPeakMiB and RSSPeakMiB are this process's: the strategy's
	// workers or clients, the producers and the simulator.
	HeapPeakMiB float64 `json:"heap_peak_mib"`
	RSSPeakMiB  float64 `json:"rss_peak_mib"`
	// Timeline counts calls reaching the API (accepted or not) per
	// timelineBin of real time.
	Timeline []int `json:"calls_per_10s"`
}

func main() {
	if os.Getenv(childEnv) != "" {
		os.Exit(worker.RunFromEnv())
	}
	size := flag.Float64("size", 1, "workload size: 1 is the documented size (200,000-URL deploy, 3,000-event burst)")
	scale := flag.Float64("scale", 0, "time scale for every workload: 60 runs 5 minutes of Cloudflare time in 5 seconds (default: cms-burst 1, deploy 10, trickle 60, mixed-day 10)")
	only := flag.String("workloads", "", "comma-separated workloads (default all: cms-burst, deploy, trickle, mixed-day)")
	which := flag.String("strategies", "", "comma-separated strategies (default all)")
	out := flag.String("out", "bench-results", "directory for results.json and the charts")
	waiting := flag.Int("backlog", 0, "instead of the workloads, queue this many URLs while the limits let almost nothing out, and report Redis memory per waiting URL and the worker's RSS")
	scaleRun := flag.Bool("accounts", false, "instead of the workloads, compare 1 account × 100 zones with 100 accounts × 100 zones: a 10,000-URL backlog and 1,000 lone URLs; p99 latency, CPU per call, Redis per idle zone")
	flag.Parse()
	if err := withRedis(func(srv *testredis.Server, rdb *redis.Client) error {
		if *scaleRun {
			if err := os.MkdirAll(*out, 0o755); err != nil {
				return err
			}
			return accountsBench(srv, rdb, *out)
		}
		if *waiting > 0 {
			return backlog(srv, rdb, *waiting)
		}
		return run(srv, rdb, *size, *scale, *only, *which, *out)
	}); err != nil {
		fmt.Fprintln(os.Stderr, "purgebench:", err)
		os.Exit(1)
	}
}

// withRedis runs f against a fresh redis-server.
func withRedis(f func(*testredis.Server, *redis.Client) error) error {
	srv, err := testredis.Start()
	if err != nil {
		return err
	}
	defer srv.Close()
	rdb := srv.Client()
	defer rdb.Close()
	return f(srv, rdb)
}

func run(srv *testredis.Server, rdb *redis.Client, size, scale float64, only, which, out string) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	var results []result
	for _, w := range workloads(size, scale) {
		if only != "" && !slices.Contains(strings.Split(only, ","), w.Name) {
			continue
		}
		slices.SortStableFunc(w.Events, func(a, b event) int { return int(a.At - b.At) })
		var rs []result
		for _, s := range strategies() {
			if which != "" && !slices.Contains(strings.Split(which, ","), s.Name) {
				continue
			}
			fmt.Fprintf(os.Stderr, "purgebench: %s × %s…\n", w.Name, s.Name)
			r, err := runOne(rdb, srv.URL(), w.Scale, w, s)
			if err != nil {
				return fmt.Errorf("%s × %s: %w", w.Name, s.Name, err)
			}
			rs = append(rs, r)
		}
		if err := chart(filepath.Join(out, "calls-"+w.Name+".png"), w.Name, rs); err != nil {
			return err
		}
		results = append(results, rs...)
	}
	printTable(results)
	b, _ := json.MarshalIndent(results, "", "  ")
	return os.WriteFile(filepath.Join(out, "results.json"), b, 0o644)
}

func runOne(rdb *redis.Client, url string, scale float64, w workload, s strategy) (result, error) {
	if err := rdb.FlushAll(context.Background()).Err(); err != nil {
		return result{}, err
	}
	free := purge.Plans["free"]
	per := func(r rate.Rate) rate.Rate { return rate.Per(r.N, time.Duration(float64(r.Per)/scale)) }
	b := &bench{scale: scale, rdb: rdb, url: url, global: per(rate.Per(1200, 5*time.Minute)),
		block: time.Duration(float64(5*time.Minute) / scale), requests: batching.NewRequests(rdb, time.Hour)}
	b.plan = free
	b.plan.FlexRate, b.plan.URLRate = per(free.FlexRate), per(free.URLRate)
	b.plan.URLBurst = free.URLRate.N * int(scale)
	var ids []string
	for _, z := range zoneNames {
		ids = append(ids, zoneID(z))
	}
	b.sim = cftest.NewServer(cftest.Config{Token: token, Zones: ids, Plan: b.plan, GlobalLimit: b.global, Block: b.block})
	defer b.sim.Close()
	var err error
	if b.api, err = purge.NewClient(purge.ClientConfig{BaseURL: b.sim.URL, Token: token, Timeout: 10 * time.Second}); err != nil {
		return result{}, err
	}

	span := w.Events[len(w.Events)-1].At
	ctx, cancel := context.WithTimeout(context.Background(), span+60*time.Second)
	defer cancel()
	debug.FreeOSMemory() // so that the resident set measures this run, not earlier ones
	peaks := sampleMemory(ctx, rdb)
	start := time.Now()
	runErr := s.run(ctx, b, w)
	cancel()
	r := measure(w, s.Name, start, b, scale)
	r.RedisPeakMiB, r.HeapPeakMiB, r.RSSPeakMiB = peaks()
	if runErr != nil {
		fmt.Fprintf(os.Stderr, "purgebench: %s × %s: %v\n", w.Name, s.Name, runErr)
	}
	return r, nil
}

// sampleMemory polls Redis's used memory and this process's heap and
// resident set until ctx ends; the returned function gives the peaks in MiB.
func sampleMemory(ctx context.Context, rdb *redis.Client) func() (redis, heap, rss float64) {
	var redisPeak, heapPeak, rssPeak float64
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			heapPeak = max(heapPeak, float64(ms.HeapInuse)/(1<<20))
			redisPeak = max(redisPeak, float64(usedMemory(context.Background(), rdb))/(1<<20))
			rssPeak = max(rssPeak, rssMiB(os.Getpid()))
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return func() (float64, float64, float64) {
		<-done
		return redisPeak, heapPeak, rssPeak
	}
}

func printTable(rs []result) {
	tw := tabwriter.NewWriter(os.Stdout, 1, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "workload\tstrategy\tscale\tcalls\tlower bound\tcalls÷bound\tpurged\t429s\tblocks\tblocked s\tlast purge s\tp50 s\tp99 s\tbusiest 5 min\t÷ limit\tRedis MiB\tRSS MiB\t")
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t%d\t%d\t%.3f\t%d/%d\t%d\t%d\t%.0f\t%.0f\t%.1f\t%.1f\t%d\t%.3f\t%.1f\t%.1f\t\n", r.Workload, r.Strategy, r.Scale, r.Calls, r.LowerBound, r.Ratio,
			r.Purged, r.Requested, r.RateLimited, r.Blocks, r.BlockedSeconds, r.LastPurgeSec, r.P50Sec, r.P99Sec, r.BusiestWindow, r.WindowUse, r.RedisPeakMiB, r.RSSPeakMiB)
	}
	tw.Flush()
}
