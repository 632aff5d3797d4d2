package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/purgeq/purgeq/batching"
	"github.com/purgeq/purgeq/internal/testredis"
	"github.com/purgeq/purgeq/limits/rate"
	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/purge/cftest"
	"github.com/purgeq/purgeq/tasks"
)

// scaleCase is one deployment shape of -accounts.
type scaleCase struct{ accounts, zonesEach int }

// scaleResult is what -accounts measures for one shape.
type scaleResult struct {
	Accounts, Zones int
	// Lone is how many lone URLs went out (one a zone, each in a call of
	// its own lane), Calls how many calls the worker made in all.
	Lone, Calls int
	P50, P99    time.Duration // enqueue → call of the lone URLs
	CPUPerCall  time.Duration // the worker process's CPU time ÷ calls
	// IdleBytes is Redis's used memory with the worker up and nothing
	// queued.
	IdleBytes int64
}

// accountsBench runs the worker against 1 account × 100 zones and 100
// accounts × 100 zones (10,000 zones), each time with a 10,000-URL backlog
// on one zone and a lone URL on each of 1,000 zones (each zone of the
// smaller shape ten times, a second apart), and reports p50/p99 enqueue →
// call latency of the lone URLs, the worker's CPU per call and Redis
// memory per idle zone.
func accountsBench(srv *testredis.Server, rdb *redis.Client, out string) error {
	var rs []scaleResult
	for _, c := range []scaleCase{{1, 100}, {100, 100}} {
		fmt.Fprintf(os.Stderr, "purgebench: %d accounts × %d zones…\n", c.accounts, c.zonesEach)
		r, err := runScale(srv, rdb, c, out)
		if err != nil {
			return fmt.Errorf("%d × %d: %w", c.accounts, c.zonesEach, err)
		}
		rs = append(rs, r)
	}
	fmt.Printf("%-22s %8s %8s %10s %10s %14s\n", "shape", "lone", "calls", "p50", "p99", "CPU per call")
	for _, r := range rs {
		fmt.Printf("%-22s %8d %8d %10v %10v %14v\n", fmt.Sprintf("%d × %d = %d zones", r.Accounts, r.Zones/r.Accounts, r.Zones),
			r.Lone, r.Calls, r.P50.Round(time.Millisecond), r.P99.Round(time.Millisecond), r.CPUPerCall.Round(time.Microsecond))
	}
	small, big := rs[0], rs[1]
	fmt.Printf("p99 ratio %.2f, CPU per call ratio %.2f, Redis per idle zone %.0f bytes\n",
		float64(big.P99)/float64(small.P99), float64(big.CPUPerCall)/float64(small.CPUPerCall),
		float64(big.IdleBytes-small.IdleBytes)/float64(big.Zones-small.Zones))
	return nil
}

func zoneName(a, z int) string { return fmt.Sprintf("z%03d-%03d.example", a, z) }

func runScale(srv *testredis.Server, rdb *redis.Client, c scaleCase, out string) (scaleResult, error) {
	ctx := context.Background()
	res := scaleResult{Accounts: c.accounts, Zones: c.accounts * c.zonesEach}
	if err := rdb.FlushAll(ctx).Err(); err != nil {
		return res, err
	}
	// URLs leave at 2,000 a second per account: the backlog takes five
	// seconds, and lone URLs of its account wait in line with it.
	plan := purge.Plans["free"]
	plan.URLRate, plan.URLBurst = rate.Per(2000, time.Second), 2000
	var accounts []cftest.Account
	var file strings.Builder
	file.WriteString("accounts:\n")
	var zones tasks.Zones
	for a := range c.accounts {
		acct := cftest.Account{Name: fmt.Sprintf("acct-%03d", a), Token: fmt.Sprintf("token-%03d", a), Zones: map[string]string{}, Plan: plan}
		fmt.Fprintf(&file, "  - name: %s\n    api_token: %s\n    plan: free\n    global_limit: 100000/1s\n    url_limit: 2000/1s\n    url_burst: 2000\n    zones:\n", acct.Name, acct.Token)
		for z := range c.zonesEach {
			name, id := zoneName(a, z), fmt.Sprintf("id-%03d-%03d", a, z)
			acct.Zones[name] = id
			zones = append(zones, tasks.Zone{Name: name, ID: id})
			fmt.Fprintf(&file, "      %s: %s\n", name, id)
		}
		accounts = append(accounts, acct)
	}
	sim := cftest.NewServer(cftest.Config{Accounts: accounts, Plan: plan})
	defer sim.Close()
	cfgPath := filepath.Join(out, "accounts.yaml")
	if err := os.WriteFile(cfgPath, []byte(file.String()), 0o600); err != nil {
		return res, err
	}

	self, err := os.Executable()
	if err != nil {
		return res, err
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), childEnv+"=1", "PURGE_REDIS_URL="+srv.URL(), "PURGE_CLOUDFLARE_API_URL="+sim.URL,
		"PURGE_CONFIG_FILE="+cfgPath, "PURGE_HTTP_ADDR=127.0.0.1:0", "PURGE_LOG_LEVEL=warn", "PURGE_BATCH_WAIT=200ms")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return res, err
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		published, _ := tasks.PublishedZones(ctx, rdb)
		if len(published) == len(zones) {
			break
		}
		if time.Now().After(deadline) {
			return res, fmt.Errorf("the worker did not publish its %d zones", len(zones))
		}
	}
	time.Sleep(time.Second) // idle: the worker's own keys are written
	res.IdleBytes = usedMemory(ctx, rdb)
	cpu0 := cpuTime(cmd.Process.Pid)

	ac := asynq.NewClientFromRedisClient(rdb)
	defer ac.Close()
	client := tasks.NewClient(ac, tasks.ClientOptions{Zones: zones, Redis: rdb})
	var ids []string
	backlog := make([]purge.File, 10000)
	for i := range backlog {
		backlog[i] = purge.File{URL: fmt.Sprintf("https://%s/backlog/%d", zoneName(0, 0), i)}
	}
	r, err := client.Enqueue(ctx, tasks.PurgeRequest{Zone: zoneName(0, 0), Files: backlog})
	if err != nil {
		return res, err
	}
	ids = append(ids, r.ID)
	// lone URLs: zone i of 1,000 (the smaller shape's zones ten times
	// over), spread over ten seconds
	enqueued := map[string]time.Time{}
	const lone = 1000
	for i := range lone {
		var a, z int
		if res.Zones >= lone {
			a, z = (i*c.accounts/lone)%c.accounts, i%c.zonesEach
		} else {
			a, z = 0, i%c.zonesEach
		}
		u := fmt.Sprintf("https://%s/lone/%d", zoneName(a, z), i)
		enqueued[u] = time.Now()
		r, err := client.Enqueue(ctx, tasks.PurgeRequest{Zone: zoneName(a, z), Files: []purge.File{{URL: u}}})
		if err != nil {
			return res, err
		}
		ids = append(ids, r.ID)
		time.Sleep(10 * time.Millisecond)
	}
	requests := batching.NewRequests(rdb, time.Hour)
	for deadline := time.Now().Add(5 * time.Minute); ; time.Sleep(100 * time.Millisecond) {
		done := 0
		for _, id := range ids {
			if st, err := requests.Status(ctx, id); err == nil && st.State.Finished() {
				done++
			}
		}
		if done == len(ids) {
			break
		}
		if time.Now().After(deadline) {
			return res, fmt.Errorf("%d of %d requests done after 5 minutes", done, len(ids))
		}
	}
	res.CPUPerCall = cpuTime(cmd.Process.Pid) - cpu0
	var lat []time.Duration
	for _, call := range sim.Calls() {
		if !call.Accepted() {
			continue
		}
		res.Calls++
		for _, it := range call.Items {
			if at, ok := enqueued[it]; ok {
				lat = append(lat, call.At.Sub(at))
			}
		}
	}
	res.Lone = len(lat)
	res.CPUPerCall /= time.Duration(max(1, res.Calls))
	slices.Sort(lat)
	if len(lat) > 0 {
		res.P50, res.P99 = lat[len(lat)/2], lat[len(lat)*99/100]
	}
	return res, nil
}

// cpuTime reads a process's user and system CPU time from /proc (0
// elsewhere).
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// fields after the command name (which may hold spaces) in parentheses
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(fields) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	const ticks = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / ticks
}
