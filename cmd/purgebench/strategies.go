package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/rs/zerolog"
	"golang.org/x/time/rate"

	"github.com/purgeq/purgeq/internal/config"
	"github.com/purgeq/purgeq/internal/worker"
	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/tasks"
)

// strategy replays a workload against the simulator at base and returns
// when it has nothing more to send (or ctx ends).
type strategy struct {
	Name string
	run  func(ctx context.Context, b *bench, w workload) error
}

func strategies() []strategy {
	return []strategy{
		{"purgeq-1-worker", func(ctx context.Context, b *bench, w workload) error { return runPurgeq(ctx, b, w, 1) }},
		{"purgeq-4-workers", func(ctx context.Context, b *bench, w workload) error { return runPurgeq(ctx, b, w, 4) }},
		{"naive-per-event", runNaive},
		{"chunk-by-30", runChunk30},
		{"sdk-4rps-x4", runSDK},
	}
}

// replay calls f for each event at its offset.
func replay(ctx context.Context, w workload, f func(event)) {
	start := time.Now()
	for _, e := range w.Events {
		if d := time.Until(start.Add(e.At)); d > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(d):
			}
		}
		f(e)
	}
}

// batches splits an event into calls of at most size items of one kind.
func batches(e event, size int) []purge.Batch {
	var out []purge.Batch
	for _, kv := range []struct {
		kind  purge.Kind
		items []string
	}{{purge.Files, e.URLs}, {purge.Tags, e.Tags}} {
		for start := 0; start < len(kv.items); start += size {
			items := kv.items[start:min(start+size, len(kv.items))]
			keys := make([]string, len(items))
			for i, it := range items {
				keys[i], _ = purge.Normalize(kv.kind, it)
			}
			out = append(out, purge.Batch{Kind: kv.kind, Items: keys})
		}
	}
	return out
}

// runPurgeq runs n workers of this project and queues every event through
// tasks.Client, waiting until every request is finished.
func runPurgeq(ctx context.Context, b *bench, w workload, n int) error {
	for k, v := range b.workerEnv() {
		os.Setenv(k, v)
	}
	cfg, err := config.Load()
	if err != nil {
		return err
	}
	wctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			if err := worker.Run(wctx, cfg, zerolog.Nop()); err != nil {
				fmt.Fprintln(os.Stderr, "worker:", err)
			}
		})
	}
	defer func() { stop(); wg.Wait() }()

	ac := asynq.NewClientFromRedisClient(b.rdb)
	defer ac.Close()
	client := tasks.NewClient(ac, tasks.ClientOptions{Zones: cfg.Zones})
	var ids []string
	var enqueueErr error
	replay(ctx, w, func(e event) {
		pr := tasks.PurgeRequest{Zone: e.Zone, Files: tasks.URLs(e.URLs...), Tags: e.Tags}
		var rc tasks.Receipt
		var err error
		if len(e.URLs) > 10000 { // large inputs go as a stream, as enqueue --from does
			st := client.NewStream(b.rdb, false, "")
			for start := 0; start < len(e.URLs) && err == nil; start += 1000 {
				err = st.Add(ctx, tasks.PurgeRequest{Zone: e.Zone, Files: tasks.URLs(e.URLs[start:min(start+1000, len(e.URLs))]...)})
			}
			if err == nil {
				rc, err = st.Commit(ctx)
			}
		} else {
			rc, err = client.Enqueue(ctx, pr)
		}
		if err != nil {
			enqueueErr = err
			return
		}
		ids = append(ids, rc.ID)
	})
	if enqueueErr != nil {
		return enqueueErr
	}
	for _, id := range ids {
		for {
			st, err := b.requests.Status(ctx, id)
			if err == nil && st.State.Finished() {
				break
			}
			select {
			case <-ctx.Done():
				return errors.New("deadline: requests still unfinished")
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return nil
}

// runNaive sends one call per event and kind at once (chunked only to the
// cap, which Cloudflare would otherwise refuse), never retrying: what CMS
// plugins do.
func runNaive(ctx context.Context, b *bench, w workload) error {
	var wg sync.WaitGroup
	replay(ctx, w, func(e event) {
		for _, batch := range batches(e, 100) {
			wg.Go(func() { b.api.Purge(ctx, zoneID(e.Zone), batch) })
		}
	})
	wg.Wait()
	return nil
}

// runChunk30 sends each event in chunks of 30, one after another, never
// retrying: the WordPress plugin's strategy.
func runChunk30(ctx context.Context, b *bench, w workload) error {
	var wg sync.WaitGroup
	replay(ctx, w, func(e event) {
		wg.Go(func() {
			for _, batch := range batches(e, 30) {
				b.api.Purge(ctx, zoneID(e.Zone), batch)
			}
		})
	})
	wg.Wait()
	return nil
}

// runSDK is the old official Go SDK's strategy: 4 processes, each
// throttled to 4 requests a second, retrying 429s and errors up to 10 times
// with backoff capped at 30 s (all scaled), ignoring long Retry-Afters.
func runSDK(ctx context.Context, b *bench, w workload) error {
	type job struct {
		zone  string
		batch purge.Batch
	}
	jobs := make(chan job, 1<<20)
	var wg sync.WaitGroup
	for range 4 {
		lim := rate.NewLimiter(rate.Limit(4*b.scale), 1)
		wg.Go(func() {
			for j := range jobs {
				for attempt := range 11 {
					if lim.Wait(ctx) != nil {
						return
					}
					_, err := b.api.Purge(ctx, zoneID(j.zone), j.batch)
					if err == nil || purge.ClassOf(err) == purge.Permanent || purge.ClassOf(err) == purge.Misconfigured {
						break
					}
					backoff := min(30*time.Second, time.Duration(1<<attempt)*time.Second)
					select {
					case <-ctx.Done():
						return
					case <-time.After(time.Duration(float64(backoff) / b.scale)):
					}
				}
			}
		})
	}
	replay(ctx, w, func(e event) {
		for _, batch := range batches(e, 100) {
			jobs <- job{e.Zone, batch}
		}
	})
	close(jobs)
	wg.Wait()
	return nil
}
