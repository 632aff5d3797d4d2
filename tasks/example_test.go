package tasks_test

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/tasks"
)

// ExampleClient queues purges from a Go program: validation names every bad
// item and queues nothing; a good request is in Redis when Enqueue returns.
func ExampleClient() {
	opt, _ := redis.ParseURL(os.Getenv("PURGE_TEST_REDIS_URL")) // your PURGE_REDIS_URL
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	ac := asynq.NewClientFromRedisClient(rdb)
	defer ac.Close()

	zones, _ := tasks.ParseZones("example.com=023e105f4ecef8ad9ca31a8372d0c353")
	client := tasks.NewClient(ac, tasks.ClientOptions{Zones: zones})

	_, err := client.Enqueue(context.Background(), tasks.PurgeRequest{
		Files: tasks.URLs("https://www.example.com/a.css", "www.example.com/no-scheme"),
	})
	var invalid *purge.InvalidError
	if errors.As(err, &invalid) {
		for _, it := range invalid.Items {
			fmt.Printf("rejected %s: %s\n", it.Item, it.Reason)
		}
	}

	rc, err := client.Enqueue(context.Background(), tasks.PurgeRequest{
		Files:          tasks.URLs("https://www.example.com/a.css", "https://www.example.com/app.js?v=2&x=1"),
		Tags:           []string{"product-1234"},
		IdempotencyKey: "deploy-2026-11-26",
	})
	fmt.Println(len(rc.ID) > 0, rc.Items, rc.Duplicate, err)
	// Output:
	// rejected www.example.com/no-scheme: not an absolute URL: want http:// or https://
	// true 3 false <nil>
}
