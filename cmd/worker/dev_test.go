package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/purgeq/purgeq/internal/testredis"
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

// devWorker is a running `worker --dev` and what its banner printed.
type devWorker struct {
	out      *syncBuffer
	redisURL string // from the banner's export PURGE_REDIS_URL=… line
	uiAddr   string // from the banner's UI: http://…/monitoring/
}

// startDev runs worker --dev with env, waits for its banner and /healthz on
// the address it printed, and stops it (SIGTERM, a clean exit) when the test
// ends.
func startDev(t *testing.T, workerBin string, env []string) *devWorker {
	t.Helper()
	d := &devWorker{out: &syncBuffer{}}
	w := exec.Command(workerBin, "--dev")
	w.Env, w.Stdout, w.Stderr = env, d.out, d.out
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- w.Wait() }()
	t.Cleanup(func() {
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
			t.Logf("worker output:\n%s", d.out.String())
		}
	})

	testwait.For(t, 20*time.Second, "worker --dev to print its banner", func() bool {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("worker --dev exited early: %v\n%s", err, d.out.String())
		default:
		}
		return strings.Contains(d.out.String(), "Try, from another terminal")
	})
	for _, line := range strings.Split(d.out.String(), "\n") {
		line = strings.TrimSpace(line)
		if s, ok := strings.CutPrefix(line, "export PURGE_REDIS_URL="); ok {
			d.redisURL = s
		}
		if s, ok := strings.CutPrefix(line, "UI: http://"); ok {
			d.uiAddr, _, _ = strings.Cut(s, "/")
		}
	}
	if d.redisURL == "" || d.uiAddr == "" {
		t.Fatalf("the banner prints no export PURGE_REDIS_URL=… line or no UI address:\n%s", d.out.String())
	}
	testwait.For(t, 20*time.Second, "worker --dev to serve /healthz", func() bool {
		resp, err := http.Get("http://" + d.uiAddr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return d
}

// tryCommand runs the enqueue command the banner prints, with the built
// binary for "go run ./cmd/enqueue", and waits for the simulator to receive
// its purges.
func (d *devWorker) tryCommand(t *testing.T, enqueueBin string, env []string) {
	t.Helper()
	var printed string
	for _, line := range strings.Split(d.out.String(), "\n") {
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
	e.Env = env
	b, err := e.CombinedOutput()
	if err != nil {
		t.Fatalf("enqueue %s: %v\n%s", printed, err, b)
	}
	testwait.For(t, 20*time.Second, "the simulator to receive the purges", func() bool {
		s := d.out.String()
		return strings.Contains(s, "kind=files items=1 https://example.com/index.html → 200") && strings.Contains(s, "kind=tags items=1 product-1 → 200")
	})
}

// TestDevEndToEnd runs the real binaries as a new user would: worker --dev
// from a clean HOME, then the enqueue command it prints, with no variables
// set (when 127.0.0.1:6379 was free for the embedded Redis; else with the
// export line it printed); the purge reaches the simulator and the UI
// answers.
func TestDevEndToEnd(t *testing.T) {
	dir := t.TempDir()
	workerBin, enqueueBin := build(t, dir, "./cmd/worker"), build(t, dir, "./cmd/enqueue")
	home := filepath.Join(dir, "home")
	os.Mkdir(home, 0o755)

	d := startDev(t, workerBin, cleanEnv(home))
	redisAddr := strings.TrimSuffix(strings.TrimPrefix(d.redisURL, "redis://"), "/0")
	for _, want := range []string{"DEVELOPMENT MODE", "embedded Redis (miniredis, in memory): " + redisAddr, "SIMULATOR", "example.com=", "/monitoring/"} {
		if !strings.Contains(d.out.String(), want) {
			t.Errorf("the banner does not mention %q", want)
		}
	}
	resp, err := http.Get("http://" + d.uiAddr + "/monitoring/")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("UI: %v %v", resp, err)
	}
	resp.Body.Close()

	env := cleanEnv(home)
	if d.redisURL != "redis://127.0.0.1:6379/0" {
		t.Logf("127.0.0.1:6379 is taken on this machine: using the printed PURGE_REDIS_URL=%s", d.redisURL)
		env = append(env, "PURGE_REDIS_URL="+d.redisURL)
	} else if !strings.Contains(d.out.String(), "no variable needed") {
		t.Error("the banner does not say that the default PURGE_REDIS_URL needs no variable")
	}
	d.tryCommand(t, enqueueBin, env)
}

// hold listens on addr for the rest of the test, unless something else
// already does (that is the case under test anyway).
func hold(t *testing.T, addr string) {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Logf("%s is already taken: %v", addr, err)
		return
	}
	t.Cleanup(func() { l.Close() })
}

// TestDevPortsTaken: with 6379 (a Redis of the user's own), 8080 and 8787
// (wrangler dev) taken, worker --dev takes free ports, says so, and prints
// the export PURGE_REDIS_URL=… line; enqueue with that variable, from
// another "terminal", queues a purge that reaches the simulator.
func TestDevPortsTaken(t *testing.T) {
	dir := t.TempDir()
	workerBin, enqueueBin := build(t, dir, "./cmd/worker"), build(t, dir, "./cmd/enqueue")
	home := filepath.Join(dir, "home")
	os.Mkdir(home, 0o755)
	for _, addr := range []string{"127.0.0.1:6379", "127.0.0.1:8080", "127.0.0.1:8787"} {
		hold(t, addr)
	}

	d := startDev(t, workerBin, cleanEnv(home))
	out := d.out.String()
	if d.redisURL == "redis://127.0.0.1:6379/0" || !strings.HasPrefix(d.redisURL, "redis://127.0.0.1:") {
		t.Errorf("PURGE_REDIS_URL=%s: want the embedded Redis on a free loopback port", d.redisURL)
	}
	if d.uiAddr == "127.0.0.1:8080" {
		t.Errorf("the UI is on the taken %s", d.uiAddr)
	}
	if strings.Contains(out, "127.0.0.1:8787/client/v4") {
		t.Error("the simulator is on the taken 127.0.0.1:8787")
	}
	for _, want := range []string{"127.0.0.1:6379 is taken", "127.0.0.1:8080 is taken", "127.0.0.1:8787 is taken", "Redis is NOT at the default", "Cloudflare SIMULATOR (free plan limits): http://127.0.0.1:"} {
		if !strings.Contains(out, want) {
			t.Errorf("the banner does not say %q", want)
		}
	}
	d.tryCommand(t, enqueueBin, append(cleanEnv(home), "PURGE_REDIS_URL="+d.redisURL))
}

// TestDevOwnRedis: with PURGE_REDIS_URL set, worker --dev uses that Redis,
// says so, starts no embedded one, and prints the same URL to export.
func TestDevOwnRedis(t *testing.T) {
	srv, err := testredis.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close) // after the worker's stop, registered later
	dir := t.TempDir()
	workerBin, enqueueBin := build(t, dir, "./cmd/worker"), build(t, dir, "./cmd/enqueue")
	home := filepath.Join(dir, "home")
	os.Mkdir(home, 0o755)

	env := append(cleanEnv(home), "PURGE_REDIS_URL="+srv.URL())
	d := startDev(t, workerBin, env)
	out := d.out.String()
	if d.redisURL != srv.URL() {
		t.Errorf("export PURGE_REDIS_URL=%s, want %s", d.redisURL, srv.URL())
	}
	if !strings.Contains(out, "YOUR Redis at "+srv.Addr) || strings.Contains(out, "miniredis") {
		t.Errorf("the banner does not say it uses PURGE_REDIS_URL's Redis and no embedded one")
	}
	d.tryCommand(t, enqueueBin, env)
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
	for _, want := range []string{"PURGE_CLOUDFLARE_API_TOKEN", "PURGE_UI_USER", "--dev"} {
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
