package worker_test

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/purgeq/purgeq/batching"
	"github.com/purgeq/purgeq/internal/config"
	"github.com/purgeq/purgeq/internal/redisconn"
	"github.com/purgeq/purgeq/internal/testredis"
	"github.com/purgeq/purgeq/internal/testwait"
	"github.com/purgeq/purgeq/internal/worker"
	"github.com/purgeq/purgeq/internal/worker/workertest"
	"github.com/purgeq/purgeq/limits/rate"
	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/purge/cftest"
	"github.com/purgeq/purgeq/tasks"
)

var srv *testredis.Server

// childEnv makes the test binary run a worker from the environment
// instead of tests: the multi-process tests start workers this way.
const childEnv = "PURGEQ_TEST_WORKER_PROCESS"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(worker.RunFromEnv())
	}
	testredis.Main(m, &srv)
}

const token = "test-token"

// zoneNames maps the test zones' names to ids.
var zoneNames = map[string]string{"a.example": "za", "b.example": "zb", "c.example": "zc"}

// env is one test's world: Redis flushed, a simulator, the worker's
// environment set, and a producer client.
type env struct {
	t        *testing.T
	sim      *cftest.Server
	rdb      *redis.Client
	client   *tasks.Client
	outbox   *batching.Outbox
	requests *batching.Requests
	dead     *batching.DeadLetters
	vars     map[string]string
}

// roomyPlan has caps of 100 and buckets that never bind.
func roomyPlan() purge.Plan {
	return purge.Plan{Name: "test", MaxFiles: 100, MaxFlex: 100,
		FlexRate: rate.Per(100000, time.Second), FlexBurst: 100000, URLRate: rate.Per(1000000, time.Second), URLBurst: 1000000}
}

func setup(t *testing.T, sim cftest.Config, vars map[string]string) *env {
	t.Helper()
	rdb := testredis.Connect(t)
	testredis.Flush(t, rdb)

	// with accounts, the test describes every account and zone itself
	if len(sim.Accounts) == 0 {
		sim.Token = token
		for _, id := range zoneNames {
			sim.Zones = append(sim.Zones, id)
		}
	}
	if sim.Plan.MaxFiles == 0 {
		sim.Plan = roomyPlan()
	}
	if sim.GlobalLimit.IsZero() {
		sim.GlobalLimit = rate.Per(100000, time.Second)
	}
	s := cftest.NewServer(sim)
	t.Cleanup(s.Close)

	zones := []string{}
	for name, id := range zoneNames {
		zones = append(zones, name+"="+id)
	}
	all := map[string]string{
		"PURGE_REDIS_URL":            os.Getenv("PURGE_TEST_REDIS_URL"),
		"PURGE_CLOUDFLARE_API_URL":   s.URL,
		"PURGE_CLOUDFLARE_API_TOKEN": token,
		"PURGE_ZONES":                strings.Join(zones, ","),
		"PURGE_HTTP_ADDR":            "127.0.0.1:0",
		"PURGE_LOG_LEVEL":            "warn",
		"PURGE_PLAN":                 "free",
		"PURGE_FLEX_LIMIT":           "100000/1s",
		"PURGE_FLEX_BURST":           "100000",
		"PURGE_URL_LIMIT":            "1000000/1s",
		"PURGE_URL_BURST":            "1000000",
		"PURGE_GLOBAL_LIMIT":         "100000/1s",
		"PURGE_RETRY_BASE":           "100ms",
		"PURGE_RETRY_MAX":            "1s",
	}
	if len(sim.Accounts) > 0 {
		all["PURGE_ZONES"], all["PURGE_CLOUDFLARE_API_TOKEN"] = "", ""
	}
	for k, v := range vars {
		all[k] = v
	}
	for k, v := range all {
		t.Setenv(k, v)
	}
	cfg, err := config.Load()
	if err != nil {
		t.Fatal(err)
	}
	ac := asynq.NewClientFromRedisClient(rdb)
	t.Cleanup(func() { ac.Close() })
	return &env{t: t, sim: s, rdb: rdb, vars: all,
		client: tasks.NewClient(ac, tasks.ClientOptions{Zones: cfg.Zones}),
		outbox: batching.NewOutbox(rdb, time.Hour), requests: batching.NewRequests(rdb, time.Hour), dead: batching.NewDeadLetters(rdb)}
}

// onRedis points the env's producer and status reads at another Redis (a
// cluster or Sentinels); the workers follow PURGE_REDIS_URL.
func (e *env) onRedis(redisURL string) {
	e.t.Helper()
	e.t.Setenv("PURGE_REDIS_URL", redisURL)
	rdb, _, err := redisconn.Open(redisURL, redisconn.Producer)
	if err != nil {
		e.t.Fatal(err)
	}
	ac := asynq.NewClientFromRedisClient(rdb)
	e.t.Cleanup(func() { ac.Close(); rdb.Close() })
	zones, err := tasks.ParseZones(e.vars["PURGE_ZONES"])
	if err != nil {
		e.t.Fatal(err)
	}
	opts := tasks.ClientOptions{Zones: zones}
	if redisconn.IsSentinel(redisURL) {
		// what PURGE_REDIS_REPLICAS=1 does for enqueue
		opts.Replicas, opts.ReplicaTimeout, opts.Redis = 1, 5*time.Second, rdb
	}
	e.client = tasks.NewClient(ac, opts)
	e.outbox, e.requests, e.dead = batching.NewOutbox(rdb, time.Hour), batching.NewRequests(rdb, time.Hour), batching.NewDeadLetters(rdb)
}

// startWorker runs a worker in this process until the test ends, or until
// stop, which waits for the worker to shut down.
func (e *env) startWorker() (stop func()) {
	e.t.Helper()
	_, stop = workertest.Start(e.t, zerolog.New(zerolog.NewTestWriter(e.t)).Level(zerolog.WarnLevel))
	return stop
}

// proc is a worker running as a separate OS process.
type proc struct {
	cmd  *exec.Cmd
	logs *strings.Builder
	done chan struct{}
}

// startWorkerProcess runs a worker as a separate OS process; it is stopped
// with SIGTERM when the test ends, unless killed before.
func (e *env) startWorkerProcess() *proc {
	e.t.Helper()
	p := &proc{cmd: exec.Command(os.Args[0]), logs: &strings.Builder{}, done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), childEnv+"=1")
	p.cmd.Stderr = &lockedWriter{b: p.logs}
	if err := p.cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	var waitErr error
	go func() { waitErr = p.cmd.Wait(); close(p.done) }()
	e.t.Cleanup(func() {
		select {
		case <-p.done:
			return // killed by the test
		default:
		}
		p.cmd.Process.Signal(syscall.SIGTERM)
		<-p.done
		if waitErr != nil {
			e.t.Errorf("worker process: %v\n%s", waitErr, p.logs.String())
		}
	})
	return p
}

// kill stops the process at once, as a crash would.
func (p *proc) kill() {
	p.cmd.Process.Kill()
	<-p.done
}

// lockedWriter serialises writes from the process's output copier.
type lockedWriter struct {
	mu sync.Mutex
	b  *strings.Builder
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (e *env) enqueue(pr tasks.PurgeRequest) tasks.Receipt {
	rc, err := e.client.Enqueue(context.Background(), pr)
	if err != nil {
		e.t.Fatalf("enqueue: %v", err)
	}
	return rc
}

// waitDone waits until every request is finished and returns their statuses.
func (e *env) waitDone(d time.Duration, ids ...string) map[string]batching.Status {
	e.t.Helper()
	out := map[string]batching.Status{}
	testwait.For(e.t, d, fmt.Sprintf("%d requests to finish", len(ids)), func() bool {
		for _, id := range ids {
			if _, ok := out[id]; ok {
				continue
			}
			st, err := e.requests.Status(context.Background(), id)
			if err != nil || (st.State != "done" && st.State != "failed") {
				return false
			}
			out[id] = st
		}
		return true
	})
	return out
}

// laneKey names a zone and kind in the simulator's record.
type laneKey struct {
	zone string
	kind purge.Kind
}

// sent tallies accepted calls: items sent per lane and per item.
type sent struct {
	calls     map[laneKey]int
	items     map[laneKey]map[string]int
	accepted  []cftest.Call
	itemCalls int
}

func tally(calls []cftest.Call) sent {
	s := sent{calls: map[laneKey]int{}, items: map[laneKey]map[string]int{}}
	for _, c := range calls {
		if !c.Accepted() {
			continue
		}
		k := laneKey{c.Zone, c.Kind}
		s.calls[k]++
		if s.items[k] == nil {
			s.items[k] = map[string]int{}
		}
		for _, it := range c.Items {
			s.items[k][it]++
			s.itemCalls++
		}
		s.accepted = append(s.accepted, c)
	}
	return s
}

func (s sent) totalCalls() int {
	n := 0
	for _, c := range s.calls {
		n += c
	}
	return n
}

func percentile(ds []time.Duration, p float64) time.Duration {
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[int(math.Ceil(p*float64(len(ds))))-1]
}

// concurrently runs f(i) for i in [0, n) on k goroutines.
func concurrently(n, k int, f func(i int)) {
	var wg sync.WaitGroup
	next := make(chan int)
	for range k {
		wg.Go(func() {
			for i := range next {
				f(i)
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
}
