package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/purgeq/purgeq/batching"
	"github.com/purgeq/purgeq/internal/keyspace"
	"github.com/purgeq/purgeq/internal/testwait"
	"github.com/purgeq/purgeq/limits/rate"
	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/purge/cftest"
)

func writeLines(t *testing.T, path string, n int) {
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(f)
	for i := range n {
		fmt.Fprintf(w, "https://example.com/deploy/assets/%d/app.%08x.js\n", i, i*2654435761)
	}
	w.Flush()
	f.Close()
}

// runEnqueue runs the built binary and returns its id and peak RSS.
func runEnqueue(t *testing.T, bin string, args ...string) (string, int64) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = os.Environ()
	var errb strings.Builder
	cmd.Stderr = &errb
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("enqueue %v: %v\n%s", args, err, errb.String())
	}
	return strings.TrimSpace(string(out)), cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss * 1024
}

// TestFromStreamsLargeFiles: a 200,000-line --from file goes in as one
// request with the peak RSS of a 20,000-line one, and every item is admitted.
func TestFromStreamsLargeFiles(t *testing.T) {
	setup(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "enqueue")
	if b, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, b)
	}
	small, large := filepath.Join(dir, "20k.txt"), filepath.Join(dir, "200k.txt")
	writeLines(t, small, 20000)
	writeLines(t, large, 200000)
	_, rssSmall := runEnqueue(t, bin, "--from", small)
	id, rssLarge := runEnqueue(t, bin, "--from", large)
	t.Logf("peak RSS: %.1f MiB for 20,000 lines, %.1f MiB for 200,000", float64(rssSmall)/(1<<20), float64(rssLarge)/(1<<20))
	if rssLarge-rssSmall > 8<<20 {
		t.Errorf("memory grows with the input: %d → %d bytes", rssSmall, rssLarge)
	}

	plan := purge.Plans["free"]
	plan.URLRate, plan.URLBurst = rate.Per(10000000, time.Second), 10000000
	sim := cftest.NewServer(cftest.Config{Token: "tok", Zones: []string{"zone-com", "zone-org"}, GlobalLimit: rate.Per(100000, time.Second), Plan: plan})
	defer sim.Close()
	t.Setenv("PURGE_GLOBAL_LIMIT", "100000/1s")
	t.Setenv("PURGE_URL_LIMIT", "10000000/1s")
	t.Setenv("PURGE_URL_BURST", "10000000")
	cfg := startWorker(t, sim)
	c, err := connect(context.Background(), cfg, true)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	var st batching.Status
	testwait.For(t, 120*time.Second, "the 200,000 items to be purged", func() bool {
		st, err = c.Status(context.Background(), id)
		return err == nil && st.State == "done"
	})
	if st.Total != 200000 || st.Purged != 200000 {
		t.Errorf("status %+v", st)
	}
	if keys, _ := c.rdb.Keys(context.Background(), keyspace.Staging(id, "")+"*").Result(); len(keys) != 0 {
		t.Error("the staged chunks were not deleted")
	}
}

func TestFromSkipInvalid(t *testing.T) {
	rdb := setup(t)
	r := enqueueCmd(t, "https://example.com/1\nbad line\nhttps://elsewhere.net/2\nhttps://example.org/3\n", "--from", "-", "--skip-invalid", "--json")
	if r.code != 0 || !strings.Contains(r.stderr, "skipped stdin:2:") || !strings.Contains(r.stderr, "skipped stdin:3:") || !strings.Contains(r.stdout, `"items":2`) {
		t.Errorf("got %+v", r)
	}
	if n := pending(t, rdb); n != 1 {
		t.Errorf("%d pending", n)
	}
	if r := enqueueCmd(t, "# nothing\n\n", "--from", "-"); r.code != 2 || !strings.Contains(r.stderr, "nothing to purge") {
		t.Errorf("empty input: %+v", r)
	}
}
