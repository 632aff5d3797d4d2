// Package testredis starts a real redis-server (Debian's package) as a child
// process for a test binary, so integration tests never share state with
// another package's tests or depend on a server someone left running.
package testredis

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is a running redis-server.
type Server struct {
	Addr string
	dir  string
	args []string
	cmd  *exec.Cmd
}

// Start runs redis-server on a free loopback port with its data in a
// temporary directory. AOF persistence is on, so Restart keeps the data.
func Start() (*Server, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("redis-server is not installed (apt-get install -y redis-server): %w", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	dir, err := os.MkdirTemp("", "testredis")
	if err != nil {
		return nil, err
	}
	s := &Server{
		Addr: "127.0.0.1:" + strconv.Itoa(port),
		dir:  dir,
		args: []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
			"--save", "", "--appendonly", "yes", "--appendfsync", "everysec", "--maxmemory-policy", "noeviction",
			"--logfile", filepath.Join(dir, "redis.log")},
	}
	s.cmd = exec.Command(bin, s.args...)
	return s, s.start()
}

func (s *Server) start() error {
	s.cmd = exec.Command(s.cmd.Path, s.args...)
	if err := s.cmd.Start(); err != nil {
		return err
	}
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c.Ping(context.Background()).Err() == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("redis-server on %s did not answer within 10s (log in %s)", s.Addr, s.dir)
}

// URL is the server's redis:// URL.
func (s *Server) URL() string { return "redis://" + s.Addr + "/0" }

// Client returns a go-redis client for the server.
func (s *Server) Client() *redis.Client { return redis.NewClient(&redis.Options{Addr: s.Addr}) }

// Kill stops the server at once (SIGKILL), as a crash would.
func (s *Server) Kill() {
	s.cmd.Process.Kill()
	s.cmd.Wait()
}

// Stop shuts the server down cleanly (SIGTERM: the AOF is flushed).
func (s *Server) Stop() {
	s.cmd.Process.Signal(syscall.SIGTERM)
	s.cmd.Wait()
}

// Restart starts the server again on the same port and data directory.
func (s *Server) Restart() error { return s.start() }

// Close stops the server and removes its data.
func (s *Server) Close() {
	s.Kill()
	os.RemoveAll(s.dir)
}

// ChildEnv marks a process that a test started from its own binary: such a
// child uses its parent's server (PURGE_TEST_REDIS_URL) instead of starting one.
const ChildEnv = "PURGE_TEST_CHILD"

// Main is TestMain for packages with integration tests: it starts a server,
// exports its URL as PURGE_TEST_REDIS_URL (child processes the tests start
// inherit it), runs the tests and stops the server.
func Main(m *testing.M, srv **Server) {
	if os.Getenv(ChildEnv) != "" {
		os.Exit(m.Run())
	}
	s, err := Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "testredis:", err)
		os.Exit(1)
	}
	os.Setenv("PURGE_TEST_REDIS_URL", s.URL())
	*srv = s
	code := m.Run()
	s.Close()
	os.Exit(code)
}

// Flush empties the database between tests.
func Flush(t testing.TB, c *redis.Client) {
	t.Helper()
	if err := c.FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
}
