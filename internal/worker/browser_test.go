package worker_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/purgeq/purgeq/internal/testbrowser"
	"github.com/purgeq/purgeq/purge/cftest"
	"github.com/purgeq/purgeq/tasks"
)

// TestUIInBrowser: headless Chromium renders the UI's queues page, which
// lists the project's queues; the screenshot is kept as a test artefact.
func TestUIInBrowser(t *testing.T) {
	addr := freeAddr(t)
	e := setup(t, cftest.Config{}, map[string]string{"PURGE_HTTP_ADDR": addr, "PURGE_BATCH_WAIT": "100ms"})
	e.startWorker()
	e.waitDone(20*time.Second, e.enqueue(tasks.PurgeRequest{Files: tasks.URLs("https://a.example/ui")}).ID)

	url := "http://" + addr + "/monitoring/"
	dom := testbrowser.Chromium(t, "the UI", 15*time.Second, "--dump-dom", url)
	for _, q := range []string{tasks.QueueRequests, tasks.QueueCalls} {
		if !strings.Contains(dom, q) {
			t.Errorf("the rendered queues page does not list %s", q)
		}
	}
	shot := filepath.Join(t.ArtifactDir(), "monitoring-queues.png")
	testbrowser.Chromium(t, "the UI", 15*time.Second, "--window-size=1280,900", "--screenshot="+shot, url)
	if fi, err := os.Stat(shot); err != nil || fi.Size() < 10000 {
		t.Errorf("screenshot %s: %v", shot, err)
	}
	t.Logf("screenshot: %s", shot)
}
