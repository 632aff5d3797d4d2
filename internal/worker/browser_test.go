package worker_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/purgeq/purgeq/purge/cftest"
	"github.com/purgeq/purgeq/tasks"
)

// chromium runs headless Chromium with the flags this machine needs (no
// sandbox as root, no background network traffic).
func chromium(t *testing.T, args ...string) string {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium is not installed (apt-get install -y chromium): the UI was NOT rendered in a browser")
	}
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
		"--user-data-dir=" + t.TempDir(), "--virtual-time-budget=15000"}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append(base, args...)...)
	var errb strings.Builder
	cmd.Stderr = &errb
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium %v: %v\n%s", args, err, errb.String())
	}
	return string(out)
}

// TestUIInBrowser: headless Chromium renders the UI's queues page, which
// lists the project's queues; the screenshot is kept as a test artefact.
func TestUIInBrowser(t *testing.T) {
	addr := freeAddr(t)
	e := setup(t, cftest.Config{}, map[string]string{"PURGE_HTTP_ADDR": addr, "PURGE_BATCH_WAIT": "100ms"})
	e.startWorker()
	e.waitDone(20*time.Second, e.enqueue(tasks.PurgeRequest{Files: tasks.URLs("https://a.example/ui")}).ID)

	url := "http://" + addr + "/monitoring/"
	dom := chromium(t, "--dump-dom", url)
	for _, q := range []string{tasks.QueueRequests, tasks.QueueCalls} {
		if !strings.Contains(dom, q) {
			t.Errorf("the rendered queues page does not list %s", q)
		}
	}
	shot := filepath.Join(t.ArtifactDir(), "monitoring-queues.png")
	chromium(t, "--window-size=1280,900", "--screenshot="+shot, url)
	if fi, err := os.Stat(shot); err != nil || fi.Size() < 10000 {
		t.Errorf("screenshot %s: %v", shot, err)
	}
	t.Logf("screenshot: %s", shot)
}
