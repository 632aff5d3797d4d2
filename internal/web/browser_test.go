package web_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/purgeq/purgeq/internal/testbrowser"
	"github.com/purgeq/purgeq/internal/testredis"
	"github.com/purgeq/purgeq/internal/web"
)

// TestStatusInBrowser: headless Chromium renders the status page: its
// text shows what waits, the cooldown, the dead letter and the last call,
// the chart is an SVG of 60 bars; the screenshot is kept as a test
// artefact (scripts/test puts it in test-artifacts/).
func TestStatusInBrowser(t *testing.T) {
	rdb := testredis.Connect(t)
	testredis.Flush(t, rdb)
	statusState(t, rdb)
	ts := serveStatus(t, statusSource(t, rdb), web.Options{})
	url := ts.URL + "/status"

	dom := testbrowser.Chromium(t, "the status page", 5*time.Second, "--dump-dom", url)
	text := visible(dom)
	for _, want := range []string{
		"6 items waiting in 2 zones", "default example.com 5 ",
		"left)", "Entries in the dead-letter queue: 1 ", "cf-purge-0001",
		"Calls sent in the last hour: 7 ",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the rendered page does not show %q:\n%s", want, text)
		}
	}
	if !strings.Contains(dom, `<svg class="calls"`) || strings.Count(dom, `<rect class="bar"`) != 60 {
		t.Errorf("the rendered page has no chart of 60 bars:\n%s", dom)
	}
	shot := filepath.Join(t.ArtifactDir(), "status.png")
	testbrowser.Chromium(t, "the status page", 5*time.Second, "--window-size=1280,1400", "--screenshot="+shot, url)
	if fi, err := os.Stat(shot); err != nil || fi.Size() < 10000 {
		t.Errorf("screenshot %s: %v", shot, err)
	}
	t.Logf("screenshot: %s", shot)
}
