// Command enqueue queues purges: the one-shot CLI for deploy hooks.
//
//	enqueue [--zone Z] [--url U]… [--tag T]… [--host H]… [--prefix P]…
//	        [--everything] [--from FILE|-] [--kind KIND] [--idempotency-key K]
//	        [--soft] [--source TEXT] [--wait [--timeout D]] [--json]
//	        [--callback URL] [--delay D] [--repeat-after D] [URL…]
//	enqueue status ID
//	enqueue history ITEM [--zone Z] [--json]
//	enqueue dlq list|retry|drop
//	enqueue serve
//
// --help and --version of every command answer on stdout, exit 0, without
// the configuration or Redis.
//
// It prints the request id on stdout and messages on stderr. Exit status:
// 0 durably queued (with --wait: every item purged); 2 invalid input or
// usage, nothing queued, every bad item named; 1 anything else (Redis
// unreachable, --wait timed out, an item dead-lettered, or queued but not
// confirmed by the replicas PURGE_REDIS_REPLICAS asks for).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"os/user"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/purgeq/purgeq/batching"
	"github.com/purgeq/purgeq/internal/config"
	"github.com/purgeq/purgeq/internal/redisconn"
	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/tasks"
)

// Exit codes (CONTRACT.md).
const (
	exitOK      = 0
	exitFailed  = 1
	exitInvalid = 2
)

// exitError carries an exit code with its message.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }

func usageError(format string, a ...any) error {
	return &exitError{exitInvalid, fmt.Errorf(format, a...)}
}

// list is a repeatable string flag.
type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(s string) error { *l = append(*l, s); return nil }

type options struct {
	zone, from, kind, key string
	source, priority      string
	urls, tags, hosts     list
	prefixes              list
	everything, soft      bool
	wait, json            bool
	skipInvalid           bool
	timeout               time.Duration
	callback              string
	delay, repeatAfter    time.Duration
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	err := dispatch(ctx, args, stdin, stdout, stderr)
	if err == nil {
		return exitOK
	}
	if errors.Is(err, errAnswered) || errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err.Error() != "" {
			fmt.Fprintln(stderr, "enqueue:", ee.err)
		}
		return ee.code
	}
	fmt.Fprintln(stderr, "enqueue:", err)
	return exitFailed
}

func dispatch(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	ctx, args, err := withServer(ctx, args)
	if err != nil {
		return err
	}
	if len(args) > 0 {
		switch args[0] {
		case "status":
			return status(ctx, args[1:], stdout, stderr)
		case "history":
			return history(ctx, args[1:], stdout, stderr)
		case "dlq":
			return dlq(ctx, args[1:], stdout, stderr)
		case "serve":
			// serve takes no flags: answer --help and --version here,
			// before it loads the configuration or opens Redis.
			if help, version := helpOrVersion(args[1:]); help || version {
				return answer(help, stdout, func(w io.Writer) { fmt.Fprint(w, serveUsage) })
			}
			return serve(ctx, args[1:], stderr)
		}
	}
	return enqueue(ctx, args, stdin, stdout, stderr)
}

func enqueue(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	var o options
	fs := flag.NewFlagSet("enqueue", flag.ContinueOnError)
	fs.StringVar(&o.zone, "zone", "", "zone name or id (default: picked by each URL's, host's or prefix's hostname)")
	fs.Var(&o.urls, "url", "URL to purge (repeatable; positional arguments are URLs too)")
	fs.Var(&o.tags, "tag", "cache tag to purge (repeatable)")
	fs.Var(&o.hosts, "host", "hostname to purge (repeatable)")
	fs.Var(&o.prefixes, "prefix", "prefix host/path to purge (repeatable)")
	fs.BoolVar(&o.everything, "everything", false, "purge everything in the zone")
	fs.StringVar(&o.from, "from", "", "read one item per line from FILE (- for stdin)")
	fs.StringVar(&o.kind, "kind", "files", "kind of the --from items: files, tags, hosts or prefixes")
	fs.StringVar(&o.key, "idempotency-key", "", "a repeated request with the same key queues nothing new")
	fs.BoolVar(&o.soft, "soft", false, "invalidate (mark stale) instead of evicting")
	fs.BoolVar(&o.wait, "wait", false, "wait until every item is purged (exit 0) or one is dead-lettered (exit 1)")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Minute, "with --wait: give up after this long (exit 1)")
	fs.BoolVar(&o.json, "json", false, "print the result as JSON on stdout")
	fs.StringVar(&o.source, "source", defaultSource(), "who or what asks, recorded with the request (default: user@host, and the commit and pipeline in CI)")
	fs.StringVar(&o.priority, "priority", "normal", "high (an editorial hotfix: leaves first when the limits are busy), normal, or bulk (imports, backfills: takes what the others leave)")
	fs.BoolVar(&o.skipInvalid, "skip-invalid", false, "with --from: queue the valid lines and report the invalid ones, instead of queueing nothing")
	fs.StringVar(&o.callback, "callback", "", "POST the request's final status to this http(s) URL once it ends, signed with PURGE_CALLBACK_SECRET")
	fs.DurationVar(&o.delay, "delay", 0, "send nothing before now + this (at most 24h): a deploy whose new origin is not live yet")
	fs.DurationVar(&o.repeatAfter, "repeat-after", 0, "purge the same items again this long after the first purge was accepted (at most 24h): a rolling deploy's old instances may re-cache old bytes")
	usage := func(w io.Writer) {
		fmt.Fprint(w, "Usage: enqueue [flags] [URL…]\n       enqueue status ID\n       enqueue history ITEM [--zone Z] [--json]\n       enqueue dlq list|retry|drop  (enqueue dlq --help)\n       enqueue serve                the HTTP intake\n\nQueues a purge and prints its request id.\n\nFlags:\n")
		printDefaults(fs, w)
		fmt.Fprint(w, "\nExit status: 0 queued (with --wait: purged), 2 invalid input (nothing queued), 1 anything else.\nEnvironment: PURGE_REDIS_URL, PURGE_ZONES (see worker --help).\n")
	}
	if err := parseArgs(fs, args, usage, stdout, stderr); err != nil {
		return err
	}
	o.urls = append(o.urls, fs.Args()...)

	if o.everything && o.zone == "" {
		// never implied from a single configured zone: too much to guess
		return usageError("--everything purges a whole zone: name it with --zone")
	}
	pr := tasks.PurgeRequest{Zone: o.zone, Files: tasks.URLs(o.urls...), Tags: o.tags, Hosts: o.hosts, Prefixes: o.prefixes,
		Everything: o.everything, Soft: o.soft, IdempotencyKey: o.key, Producer: "cli", Source: o.source, Priority: o.priority,
		CallbackURL: o.callback, Delay: o.delay, RepeatAfter: o.repeatAfter}

	side, err := openSide(ctx)
	if err != nil {
		return err
	}
	defer side.close()
	rc, err := side.queue(ctx, o, pr, stdin, stdout, stderr)
	if err != nil {
		return err
	}
	if rc.Duplicate {
		fmt.Fprintf(stderr, "enqueue: idempotency key seen before: request %s was queued earlier; nothing new queued\n", rc.ID)
	} else {
		fmt.Fprintf(stderr, "enqueue: queued %d item(s)\n", rc.Items)
	}
	if !o.wait {
		return printResult(stdout, o.json, rc, nil)
	}
	st, err := waitDone(ctx, side, rc.ID, o.timeout, stderr)
	if perr := printResult(stdout, o.json, rc, st); perr != nil {
		return perr
	}
	return err
}

// defaultSource names who runs the command: user@host, and in CI the commit
// and pipeline from the usual variables (GitHub Actions, GitLab CI).
func defaultSource() string {
	who := "unknown"
	if u, err := user.Current(); err == nil {
		who = u.Username
	}
	host, _ := os.Hostname()
	src := who + "@" + host
	for _, ci := range [][2]string{{"GITHUB_SHA", "GITHUB_RUN_ID"}, {"CI_COMMIT_SHA", "CI_PIPELINE_ID"}} {
		if commit := os.Getenv(ci[0]); commit != "" {
			src += " commit " + commit
			if run := os.Getenv(ci[1]); run != "" {
				src += " pipeline " + run
			}
			break
		}
	}
	return src
}

// errAnswered is returned once --help or --version has been answered: exit
// 0, nothing else done.
var errAnswered = errors.New("answered")

const serveUsage = `Usage: enqueue serve

Runs the HTTP intake (POST /v1/purge, GET /v1/purge/{id}, the
Cloudflare-compatible /client/v4/zones/{zone}/purge_cache, GET /healthz)
until interrupted. Requests bear one of the tokens of PURGE_INTAKE_TOKENS.

Environment: PURGE_INTAKE_ADDR (default 127.0.0.1:8081), PURGE_INTAKE_TOKENS
(required), PURGE_REDIS_URL, PURGE_ZONES (see worker --help).
`

// parseArgs parses a command's flags, which may follow its arguments, and
// answers --help (usage on stdout) and --version before the command does
// anything else: neither needs the configuration or Redis. A bad flag is
// named, with the usage, on stderr: exit 2.
func parseArgs(fs *flag.FlagSet, args []string, usage func(io.Writer), stdout, stderr io.Writer) error {
	version := fs.Bool("version", false, "print the version and exit")
	fs.SetOutput(stderr)
	fs.Usage = func() {} // printed below, where it belongs
	err := parseInterleaved(fs, args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return answer(true, stdout, usage)
	case err != nil:
		usage(stderr)
		return &exitError{exitInvalid, errors.New("")}
	case *version:
		return answer(false, stdout, usage)
	}
	return nil
}

// answer prints the usage (help) or the version on stdout.
func answer(help bool, stdout io.Writer, usage func(io.Writer)) error {
	if help {
		usage(stdout)
	} else {
		fmt.Fprintln(stdout, "enqueue", version())
	}
	return errAnswered
}

// helpOrVersion reports whether args, up to "--", ask for help or the
// version: for the commands that take no flags of their own.
func helpOrVersion(args []string) (help, version bool) {
	for _, a := range args {
		switch a {
		case "--":
			return
		case "-h", "-help", "--help":
			help = true
		case "-version", "--version":
			version = true
		}
	}
	return
}

// version is the main module's version as built ("devel" from a work tree
// without version control information).
func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}

// printDefaults prints fs's flags on w.
func printDefaults(fs *flag.FlagSet, w io.Writer) {
	out := fs.Output()
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(out)
}

// parseInterleaved parses flags that may follow positional arguments
// ("enqueue https://a/ --tag t").
func parseInterleaved(fs *flag.FlagSet, args []string) error {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
	return fs.Parse(append([]string{"--"}, positional...))
}

// queue queues the request straight into Redis.
func (c *conn) queue(ctx context.Context, o options, pr tasks.PurgeRequest, stdin io.Reader, stdout, stderr io.Writer) (tasks.Receipt, error) {
	if err := c.needZones(); err != nil {
		return tasks.Receipt{}, err
	}
	if o.from != "" {
		return c.enqueueFrom(ctx, o, pr, stdin, stdout, stderr)
	}
	req, err := c.build(ctx, pr)
	if err != nil {
		return tasks.Receipt{}, invalid(err, o.json, stdout)
	}
	rc, err := c.cl().EnqueueBuilt(ctx, req)
	if err != nil {
		return tasks.Receipt{}, queueError(err)
	}
	return rc, nil
}

// enqueueFrom queues the flags' items and a --from input as one streamed
// request. Every bad line is named with its number; nothing is queued if
// any is bad, unless --skip-invalid.
func (c *conn) enqueueFrom(ctx context.Context, o options, pr tasks.PurgeRequest, stdin io.Reader, stdout, stderr io.Writer) (tasks.Receipt, error) {
	fr, err := readFrom(c.cl(), o.from, o.kind, o.zone, stdin)
	if err != nil {
		return tasks.Receipt{}, err
	}
	if len(fr.bad) > 0 && !o.skipInvalid {
		return tasks.Receipt{}, usageError("%d invalid line(s), nothing queued (--skip-invalid queues the rest):\n  %s", len(fr.bad), strings.Join(fr.bad, "\n  "))
	}
	for _, b := range fr.bad {
		fmt.Fprintln(stderr, "enqueue: skipped", b)
	}
	if fr.items == 0 && len(pr.Files)+len(pr.Tags)+len(pr.Hosts)+len(pr.Prefixes) == 0 && !pr.Everything {
		return tasks.Receipt{}, usageError("--from %s names nothing to purge", o.from)
	}
	st := c.cl().NewStream(c.rdb, o.soft, o.key)
	st.Attribute(pr.Producer, pr.Source)
	st.Prioritise(pr.Priority)
	if err := st.Follow(pr); err != nil {
		return tasks.Receipt{}, invalid(err, o.json, stdout)
	}
	if len(pr.Files)+len(pr.Tags)+len(pr.Hosts)+len(pr.Prefixes) > 0 || pr.Everything {
		if err := st.Add(ctx, pr); err != nil {
			st.Abort(ctx)
			return tasks.Receipt{}, invalid(err, o.json, stdout)
		}
	}
	if err := fr.stage(ctx, st); err != nil {
		st.Abort(ctx)
		return tasks.Receipt{}, fmt.Errorf("%w (nothing was queued)", err)
	}
	rc, err := st.Commit(ctx)
	if err != nil {
		return tasks.Receipt{}, queueError(err)
	}
	return rc, nil
}

// queueError explains a failed enqueue: nothing was queued, unless the
// request is queued but not yet on the replicas PURGE_REDIS_REPLICAS asks
// for, or Redis stopped answering before it could tell.
func queueError(err error) error {
	if errors.Is(err, tasks.ErrNotReplicated) || errors.Is(err, tasks.ErrUncertain) {
		return fmt.Errorf("%w; enqueue again with the same --idempotency-key to be sure", err)
	}
	return fmt.Errorf("%w (nothing was queued)", err)
}

// invalid reports a rejected request: every bad item, exit 2.
func invalid(err error, asJSON bool, stdout io.Writer) error {
	var ie *purge.InvalidError
	if !errors.As(err, &ie) {
		return err
	}
	if asJSON {
		json.NewEncoder(stdout).Encode(map[string]any{"error": "invalid input, nothing queued", "invalid": ie.Items})
	}
	lines := make([]string, len(ie.Items))
	for i, it := range ie.Items {
		lines[i] = fmt.Sprintf("%q: %s", it.Item, it.Reason)
	}
	return usageError("%d invalid item(s), nothing queued:\n  %s", len(ie.Items), strings.Join(lines, "\n  "))
}

func printResult(stdout io.Writer, asJSON bool, rc tasks.Receipt, st *batching.Status) error {
	if !asJSON {
		fmt.Fprintln(stdout, rc.ID)
		return nil
	}
	out := map[string]any{"id": rc.ID, "items": rc.Items, "duplicate": rc.Duplicate}
	if st != nil {
		out["status"] = st
	}
	return json.NewEncoder(stdout).Encode(out)
}

// conn is the Redis side of a command.
type conn struct {
	rdb redis.UniversalClient
	ac  *asynq.Client
	// zones and client follow the workers' published zones in serve
	// (followZones); mu guards them.
	mu     sync.RWMutex
	zones  tasks.Zones
	client *tasks.Client
	opts   tasks.ClientOptions
	// published: the zones are the workers' (PURGE_ZONES is unset).
	published bool
	requests  *batching.Requests
	dead      *batching.DeadLetters
	hist      *batching.History
	// noZones is why no item can be queued: no zones are known (set by
	// connect; needZones returns it).
	noZones error
}

// open loads the configuration and connects, failing if Redis does not
// answer.
func open(ctx context.Context) (*conn, error) {
	cfg, err := config.Load()
	if err != nil {
		return nil, usageError("%v", err)
	}
	return connect(ctx, cfg, true)
}

// connect opens Redis and resolves the zones: PURGE_ZONES, else those the
// workers published. With mustAnswer it retries briefly and fails if Redis
// does not answer.
func connect(ctx context.Context, cfg *config.Config, mustAnswer bool) (*conn, error) {
	rdb, _, err := redisconn.Open(cfg.RedisURL, redisconn.Producer)
	if err != nil {
		return nil, usageError("PURGE_REDIS_URL: %v", err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		err = rdb.Ping(ctx).Err()
		if err == nil || !mustAnswer || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if err != nil && mustAnswer {
		rdb.Close()
		return nil, fmt.Errorf("redis at %s is unreachable: %v (nothing was queued)", redisconn.Describe(cfg.RedisURL), err)
	}
	zones := cfg.Zones
	if len(zones) == 0 && err == nil {
		if zones, err = tasks.PublishedZones(ctx, rdb); err != nil {
			rdb.Close()
			return nil, fmt.Errorf("reading the workers' zones: %w", err)
		}
	}
	var noZones error
	if len(zones) == 0 {
		// Not the user's input (exit 1, not 2): the worker is not up yet, or
		// this command talks to another Redis than the worker's.
		noZones = fmt.Errorf("no zones to purge in: PURGE_ZONES is empty and no worker has published its zones in the Redis at %s yet; start a worker (worker --dev prints the PURGE_REDIS_URL to export here), or set PURGE_ZONES=example.com=<zone id>,… (nothing was queued)", redisconn.Describe(cfg.RedisURL))
	}
	ac := asynq.NewClientFromRedisClient(rdb)
	opts := tasks.ClientOptions{Zones: zones, Retention: cfg.RequestRetention,
		Replicas: cfg.RedisReplicas, ReplicaTimeout: cfg.RedisReplicaTimeout, Redis: rdb, CheckCallback: cfg.CheckCallback}
	return &conn{rdb: rdb, ac: ac, zones: zones, noZones: noZones, opts: opts, client: tasks.NewClient(ac, opts), published: len(cfg.Zones) == 0,
		requests: batching.NewRequests(rdb, cfg.RequestRetention), dead: batching.NewDeadLetters(rdb),
		hist: batching.NewHistory(rdb, cfg.HistoryRetention)}, nil
}

// cl is the producer client for the zones known now.
func (c *conn) cl() *tasks.Client {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.client
}

// zs are the zones known now.
func (c *conn) zs() tasks.Zones {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.zones
}

// followZones re-reads the zones the workers publish (some list theirs
// through the API) every interval, until ctx ends.
func (c *conn) followZones(ctx context.Context, every time.Duration, log zerolog.Logger) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		zones, err := tasks.PublishedZones(ctx, c.rdb)
		if err != nil || zones.String() == c.zs().String() {
			continue
		}
		opts := c.opts
		opts.Zones = zones
		client := tasks.NewClient(c.ac, opts)
		c.mu.Lock()
		c.zones, c.client, c.noZones = zones, client, nil
		c.mu.Unlock()
		log.Info().Int("zones", len(zones)).Msg("the workers' zones changed")
	}
}

// build builds a request; a host that matches no zone asks the workers
// that list their zones through the API to list them again.
func (c *conn) build(ctx context.Context, pr tasks.PurgeRequest) (*tasks.Request, error) {
	req, err := c.cl().Build(pr)
	var ie *purge.InvalidError
	if !errors.As(err, &ie) || !c.published {
		return req, err
	}
	asked := false
	for i, it := range ie.Items {
		if strings.HasPrefix(it.Reason, "no configured zone matches host") {
			if !asked {
				asked = tasks.WantZones(ctx, c.rdb, it.Item) == nil
			}
			if asked {
				ie.Items[i].Reason += "; the workers were asked to list their zones again (a zone new in Cloudflare is known within a minute)"
			}
		}
	}
	return req, err
}

// needZones fails, exit 1, when no zones are known: every item would be
// refused as matching no zone. Only queueing needs zones (status, dlq and
// --help do not).
func (c *conn) needZones() error { return c.noZones }

func (c *conn) close() {
	c.ac.Close()
	c.rdb.Close()
}

// waitDone polls a request's status until it finishes or the timeout,
// showing its progress.
func waitDone(parent context.Context, c side, id string, timeout time.Duration, stderr io.Writer) (*batching.Status, error) {
	ctx, cancel := context.WithTimeout(parent, timeout)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	p := newProgress(c.cooldowns(ctx), stderr)
	defer p.end()
	for {
		st, err := c.Status(ctx, id)
		switch {
		case errors.Is(err, batching.ErrUnknownRequest) || ctx.Err() != nil:
			// not queued yet, or timed out: decided below
		case err != nil:
			return nil, err
		default:
			p.show(st)
			switch st.State {
			case "done":
				return &st, nil
			case "failed":
				return &st, fmt.Errorf("%d item(s) dead-lettered:%s", st.Dead, c.deadItemsOf(ctx, id))
			}
		}
		select {
		case <-ctx.Done():
			if parent.Err() != nil {
				// Interrupted: only the waiting stops, not the purge.
				return nil, fmt.Errorf("interrupted: stopped waiting; request %s stays queued and will be purged (enqueue status %s shows its progress)", id, id)
			}
			return nil, fmt.Errorf("--wait: not finished after %s (request %s is still queued)", timeout, id)
		case <-tick.C:
		}
	}
}

// deadItemsOf names a request's dead-lettered items.
func (c *conn) deadItemsOf(ctx context.Context, id string) string {
	entries, err := c.dead.Entries(ctx, "")
	if err != nil {
		return " see enqueue dlq list"
	}
	var b strings.Builder
	for _, e := range entries {
		for _, r := range e.Requests {
			if r == id {
				fmt.Fprintf(&b, "\n  %s (%s): %s", e.Item, e.ID, e.Reason)
			}
		}
	}
	return b.String() + "\n(enqueue dlq list shows them; enqueue dlq retry ID sends them again)"
}

// status prints a request's progress.
func status(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	usage := func(w io.Writer) {
		fmt.Fprint(w, "Usage: enqueue status ID\n\nPrints the request's progress as JSON: state (queued, in_progress, done, failed),\ntotal, purged, dead; not_before for a delayed request; repeat_after, then\nrepeat {id, at} once its repeat is scheduled; repeat_of for a repeat.\n\nFlags:\n")
		printDefaults(fs, w)
	}
	if err := parseArgs(fs, args, usage, stdout, stderr); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError("usage: enqueue status ID")
	}
	id := fs.Arg(0)
	c, err := openSide(ctx)
	if err != nil {
		return err
	}
	defer c.close()
	st, err := c.Status(ctx, id)
	if errors.Is(err, batching.ErrUnknownRequest) {
		return fmt.Errorf("no request %s (unknown, or finished longer ago than PURGE_REQUEST_RETENTION)", id)
	}
	if err != nil {
		return err
	}
	return json.NewEncoder(stdout).Encode(st)
}
