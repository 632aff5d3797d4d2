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
	"strings"
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
func Start() (*Server, error) { return start() }

func start(extra ...string) (*Server, error) {
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
	s.args = append(s.args, extra...)
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

// Connect opens the test binary's server (PURGE_TEST_REDIS_URL, also set in
// child processes) and closes the client when the test ends.
func Connect(t testing.TB) *redis.Client {
	t.Helper()
	opt, err := redis.ParseURL(os.Getenv("PURGE_TEST_REDIS_URL"))
	if err != nil {
		t.Fatalf("PURGE_TEST_REDIS_URL: %v (is TestMain testredis.Main?)", err)
	}
	opt.PoolSize = 64
	c := redis.NewClient(opt)
	t.Cleanup(func() { c.Close() })
	return c
}

// Flush empties the database between tests.
func Flush(t testing.TB, c *redis.Client) {
	t.Helper()
	if err := c.FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
}

// Cluster is a Redis Cluster of masters without replicas.
type Cluster struct {
	Nodes []*Server
}

// StartCluster runs n redis-servers in cluster mode and joins them,
// spreading the slots over all of them.
func StartCluster(n int) (*Cluster, error) {
	c := &Cluster{}
	var addrs []string
	for range n {
		s, err := start("--cluster-enabled", "yes", "--cluster-node-timeout", "2000")
		if err != nil {
			c.Close()
			return nil, err
		}
		c.Nodes = append(c.Nodes, s)
		addrs = append(addrs, s.Addr)
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	out, err := exec.Command("redis-cli", append(args, "--cluster-replicas", "0", "--cluster-yes")...).CombinedOutput()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("redis-cli --cluster create: %v\n%s", err, out)
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, s := range c.Nodes {
		cl := s.Client()
		for {
			info, err := cl.ClusterInfo(context.Background()).Result()
			if err == nil && strings.Contains(info, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				cl.Close()
				c.Close()
				return nil, fmt.Errorf("cluster on %v not ok within 20s: %v %s", addrs, err, info)
			}
			time.Sleep(100 * time.Millisecond)
		}
		cl.Close()
	}
	return c, nil
}

// URL names the cluster as PURGE_REDIS_URL does: one node, the others as addr parameters.
func (c *Cluster) URL() string {
	u := "redis://" + c.Nodes[0].Addr + "/?"
	for i, s := range c.Nodes[1:] {
		if i > 0 {
			u += "&"
		}
		u += "addr=" + s.Addr
	}
	return u
}

// Close stops every node.
func (c *Cluster) Close() {
	for _, s := range c.Nodes {
		s.Close()
	}
}

// Sentinels is a master, one replica and three Sentinels watching them
// under the name "mymaster".
type Sentinels struct {
	Master, Replica *Server
	Sentinels       []*Server
}

// StartSentinels runs a replicated master with three Sentinels that fail
// over one second after the master stops answering.
func StartSentinels() (*Sentinels, error) {
	master, err := start()
	if err != nil {
		return nil, err
	}
	host, port, _ := net.SplitHostPort(master.Addr)
	replica, err := start("--replicaof", host, port)
	if err != nil {
		master.Close()
		return nil, err
	}
	st := &Sentinels{Master: master, Replica: replica}
	for range 3 {
		s, err := startSentinel(master.Addr)
		if err != nil {
			st.Close()
			return nil, err
		}
		st.Sentinels = append(st.Sentinels, s)
	}
	return st, nil
}

func startSentinel(masterAddr string) (*Server, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	dir, err := os.MkdirTemp("", "testsentinel")
	if err != nil {
		return nil, err
	}
	host, mport, _ := net.SplitHostPort(masterAddr)
	conf := filepath.Join(dir, "sentinel.conf")
	body := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nsentinel monitor mymaster %s %s 2\nsentinel down-after-milliseconds mymaster 1000\nsentinel failover-timeout mymaster 5000\n", port, dir, host, mport)
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		return nil, err
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, err
	}
	s := &Server{Addr: "127.0.0.1:" + strconv.Itoa(port), dir: dir, args: []string{conf, "--sentinel", "--logfile", filepath.Join(dir, "sentinel.log")}}
	s.cmd = exec.Command(bin)
	return s, s.start()
}

// URL names the Sentinels and the master as PURGE_REDIS_URL does.
func (st *Sentinels) URL() string {
	u := "redis://" + st.Sentinels[0].Addr + "/?master_name=mymaster"
	for _, s := range st.Sentinels[1:] {
		u += "&addr=" + s.Addr
	}
	return u
}

// Close stops everything.
func (st *Sentinels) Close() {
	for _, s := range append([]*Server{st.Master, st.Replica}, st.Sentinels...) {
		if s != nil {
			s.Close()
		}
	}
}
