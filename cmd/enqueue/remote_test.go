package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestServerMode: with --server (or PURGE_SERVER) and PURGE_SERVER_TOKEN,
// the CLI needs no Redis (PURGE_REDIS_URL points nowhere): flags, a
// streamed --from file, --wait and status work through the intake, with
// the same exit codes; a refused token exits 1, bad input 2 naming it.
func TestServerMode(t *testing.T) {
	setup(t)
	base := startIntake(t)
	startWorker(t, roomySim(t))
	t.Setenv("PURGE_REDIS_URL", "redis://127.0.0.1:1/0") // the CLI must not need it
	t.Setenv("PURGE_SERVER_TOKEN", intakeToken)

	r := enqueueCmd(t, "", "--server", base, "--wait", "--source", "ci job 9", "https://example.com/s/1", "--tag", "t-1", "--zone", "example.com")
	if r.code != 0 || !strings.Contains(r.stderr, "queued 2 item(s)") {
		t.Fatalf("flags through the intake: %+v", r)
	}
	id := strings.TrimSpace(r.stdout)
	if s := enqueueCmd(t, "", "--server="+base, "status", id); s.code != 0 || !strings.Contains(s.stdout, `"state":"done"`) || !strings.Contains(s.stdout, `"source":"ci job 9"`) {
		t.Errorf("status through the intake: %+v", s)
	}

	var lines strings.Builder
	for i := range 2500 {
		fmt.Fprintf(&lines, "https://example.com/stream/%d\n", i)
	}
	file := filepath.Join(t.TempDir(), "deploy.txt")
	os.WriteFile(file, []byte(lines.String()), 0o644)
	t.Setenv("PURGE_SERVER", base)
	r = enqueueCmd(t, "", "--from", file, "--idempotency-key", "deploy-77", "--wait")
	if r.code != 0 || !strings.Contains(r.stderr, "queued 2500 item(s)") {
		t.Fatalf("--from streamed through the intake: %+v", r)
	}
	if again := enqueueCmd(t, "", "--from", file, "--idempotency-key", "deploy-77"); again.code != 0 || strings.TrimSpace(again.stdout) != strings.TrimSpace(r.stdout) {
		t.Errorf("a re-run with the key: %+v, want the first id %s", again, r.stdout)
	}

	bad := enqueueCmd(t, "https://example.com/ok\nnot a url\nhttps://elsewhere.net/x\n", "--from", "-")
	if bad.code != 2 || !strings.Contains(bad.stderr, "line 2") || !strings.Contains(bad.stderr, "line 3") {
		t.Errorf("bad lines through the intake: %+v", bad)
	}
	if skip := enqueueCmd(t, "https://example.com/ok2\nnot a url\n", "--from", "-", "--skip-invalid"); skip.code != 0 || !strings.Contains(skip.stderr, "skipped line 2") {
		t.Errorf("--skip-invalid through the intake: %+v", skip)
	}
	t.Setenv("PURGE_SERVER_TOKEN", "wrong")
	if refused := enqueueCmd(t, "", "https://example.com/a"); refused.code != 1 || !strings.Contains(refused.stderr, "refused the token") {
		t.Errorf("a refused token: %+v", refused)
	}
}
