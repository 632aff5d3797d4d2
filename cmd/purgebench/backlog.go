package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/purgeq/purgeq/batching"
	"github.com/purgeq/purgeq/internal/testredis"
	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/purge/cftest"
	"github.com/purgeq/purgeq/tasks"
)

// childEnv makes purgebench run as a worker process (for -backlog, whose
// worker's memory must not be mixed with the producer's).
const childEnv = "PURGEBENCH_WORKER"

// backlog queues n URLs for one zone while the URL bucket lets almost
// nothing out, and reports what the waiting URLs cost: Redis memory per
// URL, and the worker process's resident memory before, while and after
// they are admitted.
func backlog(srv *testredis.Server, rdb *redis.Client, n int) error {
	sim := cftest.NewServer(cftest.Config{Token: token, Zones: []string{zoneID(zoneNames[0])}})
	defer sim.Close()

	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), childEnv+"=1",
		"PURGE_REDIS_URL="+srv.URL(), "PURGE_CLOUDFLARE_API_URL="+sim.URL, "PURGE_CLOUDFLARE_API_TOKEN="+token,
		"PURGE_ZONES="+zoneNames[0]+"="+zoneID(zoneNames[0]), "PURGE_HTTP_ADDR=127.0.0.1:0", "PURGE_LOG_LEVEL=warn",
		// one call's worth of URLs an hour: the rest waits
		"PURGE_URL_LIMIT=100/1h", "PURGE_URL_BURST=100", "PURGE_BATCH_WAIT=100ms")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	ctx := context.Background()

	var samples []float64
	sample := func() float64 {
		mib := rssMiB(cmd.Process.Pid)
		samples = append(samples, mib)
		return mib
	}
	settle := func(d time.Duration) {
		for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
			sample()
		}
	}
	settle(3 * time.Second)
	idle := sample()
	before := usedMemory(ctx, rdb)

	ac := asynq.NewClientFromRedisClient(rdb)
	defer ac.Close()
	client := tasks.NewClient(ac, tasks.ClientOptions{Zones: tasks.Zones{{Name: zoneNames[0], ID: zoneID(zoneNames[0])}}})
	st := client.NewStream(rdb, false, "")
	start := time.Now()
	length := 0
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stopSampling:
				return
			case <-time.After(100 * time.Millisecond):
				sample()
			}
		}
	}()
	for i := 0; i < n; i += 1000 {
		urls := make([]string, 0, 1000)
		for j := i; j < min(i+1000, n); j++ {
			u := fmt.Sprintf("https://www.a.example/static/%d/app.%08x.js", j, uint32(j)*2654435761)
			length += len(u)
			urls = append(urls, u)
		}
		if err := st.Add(ctx, tasks.PurgeRequest{Zone: zoneNames[0], Files: tasks.URLs(urls...)}); err != nil {
			return err
		}
	}
	rc, err := st.Commit(ctx)
	if err != nil {
		return err
	}
	enqueued := time.Since(start)
	ob := batching.NewOutbox(rdb, time.Hour)
	for {
		s, err := batching.NewRequests(rdb, time.Hour).Status(ctx, rc.ID)
		if err == nil && s.Total == n {
			break
		}
		if err != nil && !errors.Is(err, batching.ErrUnknownRequest) {
			return err
		}
		if time.Since(start) > 30*time.Minute {
			return errors.New("the backlog was not admitted within 30 minutes")
		}
		time.Sleep(100 * time.Millisecond)
	}
	admitted := time.Since(start)
	settle(5 * time.Second)
	close(stopSampling)
	<-sampled
	after := usedMemory(ctx, rdb)
	var waiting int64
	stats, err := ob.LaneStats(ctx)
	if err != nil {
		return err
	}
	for _, l := range stats {
		if l.Lane.Kind == purge.Files {
			waiting += l.Depth
		}
	}
	peak := 0.0
	for _, s := range samples {
		peak = max(peak, s)
	}
	fmt.Printf("%d URLs (%.0f bytes on average) enqueued in %v and admitted in %v (%.0f URLs/s)\n",
		n, float64(length)/float64(n), enqueued.Round(time.Millisecond), admitted.Round(time.Millisecond), float64(n)/admitted.Seconds())
	fmt.Printf("waiting: %d URLs; Redis memory %.1f MiB → %.1f MiB: %.0f bytes per waiting URL (target: length + 100 = %.0f)\n",
		waiting, float64(before)/(1<<20), float64(after)/(1<<20), float64(after-before)/float64(waiting), float64(length)/float64(n)+100)
	fmt.Printf("worker RSS: %.1f MiB idle, %.1f MiB at most while admitting, %.1f MiB with the backlog waiting\n",
		idle, peak, samples[len(samples)-1])
	return nil
}

// rssMiB reads a process's resident set size from /proc (0 elsewhere).
func rssMiB(pid int) float64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			var kb float64
			fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), &kb)
			return kb / 1024
		}
	}
	return 0
}

func usedMemory(ctx context.Context, rdb *redis.Client) int64 {
	info, err := rdb.InfoMap(ctx, "memory").Result()
	if err != nil {
		return 0
	}
	var used int64
	fmt.Sscan(info["Memory"]["used_memory"], &used)
	return used
}
