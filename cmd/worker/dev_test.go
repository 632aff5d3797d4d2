package main

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/purgeq/purgeq/internal/testwait"
)

// syncBuffer collects a process's output safely.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// cleanEnv is the environment of a fresh machine: no PURGE_ variables, an
// empty HOME.
func cleanEnv(home string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PURGE_") && !strings.HasPrefix(kv, "HOME=") {
			env = append(env, kv)
		}
	}
	return append(env, "HOME="+home)
}

func build(t *testing.T, dir, pkg string) string {
	t.Helper()
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = "../.."
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// TestDevEndToEnd runs the real binaries as a new user would: worker --dev
// from a clean HOME, then the enqueue command it prints, with no variables
// set; the purge reaches the simulator and the UI answers.
func TestDevEndToEnd(t *testing.T) {
	dir := t.TempDir()
	workerBin, enqueueBin := build(t, dir, "./cmd/worker"), build(t, dir, "./cmd/enqueue")
	home := filepath.Join(dir, "home")
	os.Mkdir(home, 0o755)

	var out syncBuffer
	w := exec.Command(workerBin, "--dev")
	w.Env, w.Stdout, w.Stderr = cleanEnv(home), &out, &out
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- w.Wait() }()
	defer func() {
		w.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("worker --dev exited with %v", err)
			}
		case <-time.After(30 * time.Second):
			w.Process.Kill()
			t.Error("worker --dev did not stop within 30s of SIGTERM")
		}
		if t.Failed() {
			t.Logf("worker output:\n%s", out.String())
		}
	}()

	testwait.For(t, 20*time.Second, "worker --dev to serve /healthz", func() bool {
		resp, err := http.Get("http://127.0.0.1:8080/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	for _, want := range []string{"DEVELOPMENT MODE", "127.0.0.1:6379", "SIMULATOR", "example.com=", "/monitoring/"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the banner does not mention %q", want)
		}
	}
	resp, err := http.Get("http://127.0.0.1:8080/monitoring/")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("UI: %v %v", resp, err)
	}
	resp.Body.Close()

	// Run the command exactly as printed, with the built binary for "go run ./cmd/enqueue".
	var printed string
	for _, line := range strings.Split(out.String(), "\n") {
		if s, ok := strings.CutPrefix(strings.TrimSpace(line), "go run ./cmd/enqueue "); ok {
			printed = s
		}
	}
	if printed == "" {
		t.Fatal("the banner prints no enqueue command")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e := exec.CommandContext(ctx, enqueueBin, strings.Fields(printed)...)
	e.Env = cleanEnv(home)
	b, err := e.CombinedOutput()
	if err != nil {
		t.Fatalf("enqueue %s: %v\n%s", printed, err, b)
	}
	testwait.For(t, 20*time.Second, "the simulator to receive the purges", func() bool {
		s := out.String()
		return strings.Contains(s, "kind=files items=1 https://example.com/index.html → 200") && strings.Contains(s, "kind=tags items=1 product-1 → 200")
	})
}

// TestRefusesMissingConfigAndHelps: without --dev a worker with nothing set
// names what is missing and exits 2; --help lists every variable.
func TestRefusesMissingConfigAndHelps(t *testing.T) {
	dir := t.TempDir()
	bin := build(t, dir, "./cmd/worker")
	cmd := exec.Command(bin)
	cmd.Env = append(cleanEnv(dir), "PURGE_HTTP_ADDR=0.0.0.0:8080")
	b, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
		t.Fatalf("exit: %v\n%s", err, b)
	}
	for _, want := range []string{"PURGE_CLOUDFLARE_API_TOKEN", "PURGE_ZONES is not set", "PURGE_UI_USER", "--dev"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("the refusal does not mention %q:\n%s", want, b)
		}
	}
	help, err := exec.Command(bin, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("--help: %v", err)
	}
	for _, want := range []string{"--dev", "PURGE_REDIS_URL", "redis://127.0.0.1:6379/0", "PURGE_GLOBAL_LIMIT", "PURGE_INTAKE_TOKENS", "PURGE_LOG_FORMAT"} {
		if !strings.Contains(string(help), want) {
			t.Errorf("--help lacks %q", want)
		}
	}
}
