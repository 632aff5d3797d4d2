package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/purgeq/purgeq/tasks"
)

// benchURLs returns n distinct URLs for one request.
func benchURLs(seq int64, n int) []string {
	urls := make([]string, n)
	for i := range urls {
		urls[i] = fmt.Sprintf("https://example.com/bench/%d/%d?v=1&w=2", seq, i)
	}
	return urls
}

// BenchmarkEnqueue compares, on the same Redis in the same run, raw asynq
// Client.Enqueue of a payload of the same size, tasks.Client.Enqueue (which
// also validates, normalises and resolves zones), and the HTTP intake.
// Run: go test -run XXX -bench Enqueue ./cmd/enqueue
func BenchmarkEnqueue(b *testing.B) {
	for _, n := range []int{1, 50} {
		b.Run(fmt.Sprintf("raw-asynq/%d-items", n), func(b *testing.B) {
			rdb := setup(b)
			ac := asynq.NewClientFromRedisClient(rdb)
			var seq atomic.Int64
			b.SetParallelism(4)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					payload := []byte(`{"urls":["` + strings.Join(benchURLs(seq.Add(1), n), `","`) + `"]}`)
					if _, err := ac.Enqueue(asynq.NewTask("bench", payload)); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
		})
		b.Run(fmt.Sprintf("tasks-client/%d-items", n), func(b *testing.B) {
			rdb := setup(b)
			ac := asynq.NewClientFromRedisClient(rdb)
			zs, _ := tasks.ParseZones(zones)
			c := tasks.NewClient(ac, tasks.ClientOptions{Zones: zs})
			var seq atomic.Int64
			b.SetParallelism(4)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := c.Enqueue(context.Background(), tasks.PurgeRequest{Files: tasks.URLs(benchURLs(seq.Add(1), n)...)}); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
		})
		b.Run(fmt.Sprintf("intake/%d-items", n), func(b *testing.B) {
			setup(b)
			base := startIntake(b)
			var seq atomic.Int64
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			b.SetParallelism(4)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					body := `{"files":["` + strings.Join(benchURLs(seq.Add(1), n), `","`) + `"]}`
					req, _ := http.NewRequest("POST", base+"/v1/purge", bytes.NewReader([]byte(body)))
					req.Header.Set("Authorization", "Bearer "+intakeToken)
					resp, err := client.Do(req)
					if err != nil {
						b.Fatal(err)
					}
					resp.Body.Close()
					if resp.StatusCode != 202 {
						b.Fatalf("status %d", resp.StatusCode)
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
		})
	}
}
