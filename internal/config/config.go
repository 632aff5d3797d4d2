// Package config reads the environment both commands share (envconfig,
// prefix PURGE; the names are public interface: rename none), fills plan defaults and
// validates everything at start-up, naming every problem at once.
package config

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/purgeq/purgeq/internal/redisconn"
	"github.com/purgeq/purgeq/limits/rate"
	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/tasks"
)

// Prefix is the environment variables' prefix.
const Prefix = "PURGE"

// Config is the whole configuration. Each field's desc is what --help prints.
type Config struct {
	RedisURL string `envconfig:"REDIS_URL" default:"redis://127.0.0.1:6379/0" desc:"Redis; rediss:// for TLS, user and password in the URL; a Redis Cluster as redis://node1:6379?addr=node2:6379&addr=node3:6379; Sentinels as redis://sentinel1:26379?addr=sentinel2:26379&master_name=mymaster"`

	APIURL       string        `envconfig:"CLOUDFLARE_API_URL" default:"https://api.cloudflare.com/client/v4" desc:"Cloudflare API base URL: https, or plain http to a loopback host only (tests, the simulator); redirects are not followed"`
	APIToken     string        `envconfig:"CLOUDFLARE_API_TOKEN" desc:"API token with Cache Purge permission (worker only; never logged)"`
	APITokenFile string        `envconfig:"CLOUDFLARE_API_TOKEN_FILE" desc:"read the API token from this file instead (container secrets)"`
	APITimeout   time.Duration `envconfig:"CLOUDFLARE_API_TIMEOUT" default:"30s" desc:"bound on one API call, response included"`

	Zones     tasks.Zones `envconfig:"ZONES" desc:"zones to purge: example.com=<zone id>,example.org=<zone id>; with neither this nor PURGE_ZONES_FILE (nor zones in the configuration file), the worker lists the token's zones through the API"`
	ZonesFile string      `envconfig:"ZONES_FILE" desc:"zones one name=id a line (# comments), for more zones than an environment variable holds; added to PURGE_ZONES"`
	// ZonesRefresh is how often discovered zones are listed again.
	ZonesRefresh time.Duration `envconfig:"ZONES_REFRESH" default:"10m" desc:"how often a worker lists discovered zones again (GET /zones; a host matching no zone asks for a listing sooner: at most once a minute, or a tenth of this if shorter)"`
	Plan         string        `envconfig:"PLAN" default:"free" desc:"free, pro, business or enterprise: default caps and purge limits"`

	GlobalLimit       rate.Rate     `envconfig:"GLOBAL_LIMIT" default:"1000/5m" desc:"calls per window per API token across all workers, N/DURATION (Cloudflare allows 1200/5m; the rest is headroom for the dashboard and other tools)"`
	GlobalGuard       time.Duration `envconfig:"GLOBAL_GUARD" desc:"extra window length covering network jitter between acquisition and arrival (default: 1% of the window, at most 1s)"`
	GlobalCountsFiles bool          `envconfig:"GLOBAL_COUNTS_FILES" default:"true" desc:"URL purges take a slot in the global window too"`
	Cooldown          time.Duration `envconfig:"COOLDOWN" default:"5m" desc:"how long every call on the token stops after a global 429 (or Retry-After, if longer)"`

	FlexLimit rate.Rate `envconfig:"FLEX_LIMIT" desc:"tag/host/prefix/everything bucket refill, N/DURATION (default from plan)"`
	FlexBurst int       `envconfig:"FLEX_BURST" desc:"tag/host/prefix/everything bucket size (default from plan)"`
	URLLimit  rate.Rate `envconfig:"URL_LIMIT" desc:"URL bucket refill in URLs, N/DURATION (default from plan)"`
	URLBurst  int       `envconfig:"URL_BURST" desc:"URL bucket size in URLs (default from plan)"`
	MaxFiles  int       `envconfig:"MAX_FILES" desc:"most URLs in one request (default from plan)"`
	MaxFlex   int       `envconfig:"MAX_FLEX" desc:"most tags, hosts or prefixes in one request (default from plan)"`

	RedisReplicas       int           `envconfig:"REDIS_REPLICAS" default:"0" desc:"producers report a request queued only once this many replicas hold it (Redis WAIT); 1 with Sentinel keeps acknowledged requests through a failover (not for Cluster)"`
	RedisReplicaTimeout time.Duration `envconfig:"REDIS_REPLICA_TIMEOUT" default:"1s" desc:"how long producers wait for PURGE_REDIS_REPLICAS before reporting the request queued but not yet replicated"`

	BatchWait        time.Duration `envconfig:"BATCH_WAIT" default:"2s" desc:"longest a partial batch waits for more items when the limits have room"`
	HistoryRetention time.Duration `envconfig:"HISTORY_RETENTION" default:"168h" desc:"how long per-item purge history is kept"`
	// EverythingMinInterval: at most one purge-everything per zone within it.
	EverythingMinInterval time.Duration `envconfig:"EVERYTHING_MIN_INTERVAL" default:"10m" desc:"at most one purge-everything per zone within this interval; another one inside it merges into the first (0: none merges)"`
	EagerFull             bool          `envconfig:"EAGER_FULL_BATCHES" default:"false" desc:"send a batch as soon as it is full; by default a full batch too waits PURGE_BATCH_WAIT, so that what a burst requests again meanwhile goes once"`
	CallWindow            int           `envconfig:"CALL_WINDOW" default:"8" desc:"most outstanding API calls per purge bucket and worker process"`
	InlineWait            time.Duration `envconfig:"INLINE_WAIT" default:"2s" desc:"a call waits in-process for the limits up to this long; longer waits re-schedule it"`
	MaxRetry              int           `envconfig:"MAX_RETRY" default:"10" desc:"attempts after a transient failure (5xx, timeout) before a batch is dead-lettered"`
	RetryBase             time.Duration `envconfig:"RETRY_BASE" default:"1s" desc:"first retry delay after a transient failure; doubles each attempt, with jitter"`
	RetryMax              time.Duration `envconfig:"RETRY_MAX" default:"5m" desc:"longest retry delay"`

	Concurrency      int           `envconfig:"CONCURRENCY" default:"0" desc:"tasks one worker runs at once (0: twice the outstanding calls of both buckets, plus 8)"`
	ShutdownTimeout  time.Duration `envconfig:"SHUTDOWN_TIMEOUT" default:"20s" desc:"how long SIGTERM waits for running tasks"`
	RequestRetention time.Duration `envconfig:"REQUEST_RETENTION" default:"24h" desc:"how long a finished request's status and idempotency key are kept"`

	HTTPAddr         string   `envconfig:"HTTP_ADDR" default:"127.0.0.1:8080" desc:"worker's HTTP side: UI, metrics, health"`
	MetricsAddr      string   `envconfig:"METRICS_ADDR" desc:"serve /metrics, /healthz and /readyz on this address, without the UI's credentials; /metrics then leaves PURGE_HTTP_ADDR, health stays on both (default: metrics on PURGE_HTTP_ADDR)"`
	MetricsTopZones  int      `envconfig:"METRICS_TOP_ZONES" default:"20" desc:"how many zone backlogs (zone and kind, the deepest) get series of their own (purgeq_outbox_zone_items); 0: none"`
	UIUser           string   `envconfig:"UI_USER" desc:"basic auth user for the UI"`
	UIPassword       string   `envconfig:"UI_PASSWORD" desc:"basic auth password for the UI (never logged)"`
	UIPasswordFile   string   `envconfig:"UI_PASSWORD_FILE" desc:"read the UI password from this file instead"`
	UIReadOnly       bool     `envconfig:"UI_READONLY" default:"false" desc:"the UI shows tasks but cannot change them"`
	IntakeAddr       string   `envconfig:"INTAKE_ADDR" default:"127.0.0.1:8081" desc:"enqueue serve listen address"`
	IntakeTokens     []string `envconfig:"INTAKE_TOKENS" desc:"comma-separated bearer tokens accepted by enqueue serve (never logged)"`
	IntakeTokensFile string   `envconfig:"INTAKE_TOKENS_FILE" desc:"read the intake tokens from this file instead (one per line, or comma-separated)"`
	Server           string   `envconfig:"SERVER" desc:"enqueue sends through this intake (http(s)://host:port) with PURGE_SERVER_TOKEN instead of talking to Redis"`
	ServerToken      string   `envconfig:"SERVER_TOKEN" desc:"bearer token for PURGE_SERVER (never logged)"`
	ConfigFile       string   `envconfig:"CONFIG_FILE" desc:"YAML file of accounts (name, api_token or api_token_file, plan, limit overrides, zones) and producers (name, token or token_file, zones, kinds, purge_everything, priority, rate); the variables still set everything it does not"`

	// Callbacks (callbacks.go) and Probes (probes.go): proof of purge.
	Callbacks
	Probes

	// Accounts are PURGE_CONFIG_FILE's accounts, else the one account the
	// variables describe (named DefaultAccount).
	Accounts []Account `ignored:"true"`

	// Producers are the intake's callers: PURGE_CONFIG_FILE's, then one
	// per PURGE_INTAKE_TOKENS token with every right.
	Producers []Producer `ignored:"true"`

	LogLevel  string `envconfig:"LOG_LEVEL" default:"info" desc:"debug, info, warn or error"`
	LogFormat string `envconfig:"LOG_FORMAT" desc:"json or console (default: console on a terminal, else json)"`
}

// Load reads the environment. It checks what both commands need; the
// worker adds CheckWorker.
func Load() (*Config, error) {
	var c Config
	if err := envconfig.Process(Prefix, &c); err != nil {
		return nil, err
	}
	// Tokens are trimmed (a stray space or U+00A0 from a copy, a newline
	// from a file); one left empty is an error, never a token that matches.
	var errs []error
	if raw := c.APIToken; raw != "" {
		if c.APIToken = strings.TrimSpace(raw); c.APIToken == "" {
			errs = append(errs, errors.New("PURGE_CLOUDFLARE_API_TOKEN is only whitespace"))
		}
	}
	if raw := c.ServerToken; raw != "" {
		if c.ServerToken = strings.TrimSpace(raw); c.ServerToken == "" {
			errs = append(errs, errors.New("PURGE_SERVER_TOKEN is only whitespace"))
		}
	}
	if c.Server != "" && !strings.HasPrefix(c.Server, "http://") && !strings.HasPrefix(c.Server, "https://") {
		errs = append(errs, fmt.Errorf("PURGE_SERVER %q: want http(s)://host:port", c.Server))
	}
	tokens, err := cleanTokens("PURGE_INTAKE_TOKENS", c.IntakeTokens)
	if err != nil {
		errs = append(errs, err)
	}
	c.IntakeTokens = tokens
	// Secrets may come from files (container secrets); a value set
	// directly wins.
	for _, f := range []struct {
		name string
		path string
		set  func(string) error
	}{
		{"PURGE_CLOUDFLARE_API_TOKEN_FILE", c.APITokenFile, func(v string) error {
			if c.APIToken != "" {
				return nil
			}
			if v == "" {
				return fmt.Errorf("PURGE_CLOUDFLARE_API_TOKEN_FILE %s is empty", c.APITokenFile)
			}
			c.APIToken = v
			return nil
		}},
		{"PURGE_UI_PASSWORD_FILE", c.UIPasswordFile, func(v string) error {
			if c.UIPassword == "" {
				c.UIPassword = v
			}
			return nil
		}},
		{"PURGE_INTAKE_TOKENS_FILE", c.IntakeTokensFile, func(v string) error {
			if len(c.IntakeTokens) > 0 {
				return nil
			}
			tokens, err := fileTokens("PURGE_INTAKE_TOKENS_FILE "+c.IntakeTokensFile, v)
			if err != nil {
				return err
			}
			c.IntakeTokens = tokens
			return nil
		}},
	} {
		if f.path == "" {
			continue
		}
		b, err := os.ReadFile(f.path)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f.name, err))
			continue
		}
		if err := f.set(strings.TrimSpace(string(b))); err != nil {
			errs = append(errs, err)
		}
	}
	if err := c.readZonesFile(); err != nil {
		errs = append(errs, err)
	}
	file, err := readConfigFile(c.ConfigFile)
	if err != nil {
		errs = append(errs, err)
	}
	if err := c.loadAccounts(file.Accounts, c.ConfigFile); err != nil {
		errs = append(errs, err)
	}
	producers, err := loadProducers(c.ConfigFile, file.Producers, c.Zones, c.IntakeTokens)
	if err != nil {
		errs = append(errs, err)
	}
	c.Producers = producers
	return &c, errors.Join(append(errs, c.check())...)
}

// cleanTokens trims every token of a list; an empty one (a stray comma, or
// only whitespace) is an error naming the variable, and is left out of the
// tokens returned.
func cleanTokens(name string, raw []string) ([]string, error) {
	var errs []error
	out := make([]string, 0, len(raw))
	for i, t := range raw {
		t = strings.TrimSpace(t)
		if t == "" {
			hint := "a stray comma?"
			if i == len(raw)-1 {
				hint = "a trailing comma?"
			}
			if raw[i] != "" {
				hint = "only whitespace"
			}
			errs = append(errs, fmt.Errorf("%s: token %d of %d is empty (%s)", name, i+1, len(raw), hint))
			continue
		}
		out = append(out, t)
	}
	return out, errors.Join(errs...)
}

// fileTokens reads a tokens file (already trimmed as a whole): one token a
// line, or comma-separated; tokens on one line may also be separated by
// spaces. An empty entry (a blank line, a stray comma) is an error naming
// the variable; so is a file holding no token at all.
func fileTokens(name, v string) ([]string, error) {
	if v == "" {
		return nil, fmt.Errorf("%s holds no token", name)
	}
	entries := strings.Split(strings.ReplaceAll(v, "\n", ","), ",")
	var out []string
	var errs []error
	for i, e := range entries {
		fields := strings.Fields(e)
		if len(fields) == 0 {
			errs = append(errs, fmt.Errorf("%s: token %d of %d is empty (a blank line or a stray comma?)", name, i+1, len(entries)))
			continue
		}
		out = append(out, fields...)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

func (c *Config) check() error {
	var errs []error
	if _, err := purge.PlanByName(c.Plan); err != nil {
		errs = append(errs, fmt.Errorf("PURGE_PLAN: %w", err))
	}
	if !strings.HasPrefix(c.RedisURL, "redis://") && !strings.HasPrefix(c.RedisURL, "rediss://") && !strings.HasPrefix(c.RedisURL, "unix://") {
		errs = append(errs, fmt.Errorf("PURGE_REDIS_URL %q: want redis://, rediss:// or unix://", redact(c.RedisURL)))
	}
	for name, d := range map[string]time.Duration{"PURGE_BATCH_WAIT": c.BatchWait, "PURGE_COOLDOWN": c.Cooldown, "PURGE_GLOBAL_GUARD": c.GlobalGuard,
		"PURGE_INLINE_WAIT": c.InlineWait, "PURGE_RETRY_BASE": c.RetryBase, "PURGE_RETRY_MAX": c.RetryMax, "PURGE_REDIS_REPLICA_TIMEOUT": c.RedisReplicaTimeout,
		"PURGE_EVERYTHING_MIN_INTERVAL": c.EverythingMinInterval, "PURGE_HISTORY_RETENTION": c.HistoryRetention} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%s must not be negative (got %s)", name, d))
		}
	}
	if c.ZonesRefresh <= 0 {
		errs = append(errs, fmt.Errorf("PURGE_ZONES_REFRESH must be positive (got %s)", c.ZonesRefresh))
	}
	if c.CallWindow < 1 {
		errs = append(errs, fmt.Errorf("PURGE_CALL_WINDOW must be at least 1 (got %d)", c.CallWindow))
	}
	if c.RedisReplicas > 0 && redisconn.IsCluster(c.RedisURL) {
		errs = append(errs, errors.New("PURGE_REDIS_REPLICAS cannot be used with a Redis Cluster URL: WAIT confirms one shard's replication only"))
	}
	for name, n := range map[string]int{"PURGE_REDIS_REPLICAS": c.RedisReplicas, "PURGE_MAX_RETRY": c.MaxRetry, "PURGE_CONCURRENCY": c.Concurrency,
		"PURGE_FLEX_BURST": c.FlexBurst, "PURGE_URL_BURST": c.URLBurst, "PURGE_MAX_FILES": c.MaxFiles, "PURGE_MAX_FLEX": c.MaxFlex} {
		if n < 0 {
			errs = append(errs, fmt.Errorf("%s must not be negative (got %d)", name, n))
		}
	}
	if err := c.checkProbes(); err != nil {
		errs = append(errs, err)
	}
	if c.LogFormat != "" && c.LogFormat != "json" && c.LogFormat != "console" {
		errs = append(errs, fmt.Errorf("PURGE_LOG_FORMAT %q: want json or console", c.LogFormat))
	}
	return errors.Join(errs...)
}

// CheckWorker adds what only the worker needs: a token, zones, and caps
// that fit the buckets. It names every problem.
func (c *Config) CheckWorker() error {
	var errs []error
	if c.APIToken == "" && len(c.Accounts) == 1 && c.Accounts[0].Name == DefaultAccount {
		errs = append(errs, errors.New("PURGE_CLOUDFLARE_API_TOKEN (or PURGE_CLOUDFLARE_API_TOKEN_FILE, or accounts in PURGE_CONFIG_FILE) is not set"))
	}
	if err := checkAPIURL(c.APIURL); err != nil {
		errs = append(errs, err)
	}
	if _, err := purge.PlanByName(c.Plan); err == nil && c.Accounts[0].Name == DefaultAccount {
		p := c.ResolvedPlan()
		if p.MaxFiles > p.URLBurst {
			errs = append(errs, fmt.Errorf("PURGE_MAX_FILES %d exceeds PURGE_URL_BURST %d by %d: a full URL batch could never be sent", p.MaxFiles, p.URLBurst, p.MaxFiles-p.URLBurst))
		}
	}
	if err := c.checkUIExposure(); err != nil {
		errs = append(errs, err)
	}
	if c.MetricsAddr != "" {
		if _, _, err := net.SplitHostPort(c.MetricsAddr); err != nil {
			errs = append(errs, fmt.Errorf("PURGE_METRICS_ADDR %q: %v", c.MetricsAddr, err))
		} else if c.MetricsAddr == c.HTTPAddr {
			errs = append(errs, fmt.Errorf("PURGE_METRICS_ADDR %q is PURGE_HTTP_ADDR too: leave it empty to serve metrics there, or pick another address", c.MetricsAddr))
		}
	}
	return errors.Join(errs...)
}

// checkAPIURL wants an http(s) URL with a host; plain http only to a
// loopback host (the tests' and the dev simulator's http://127.0.0.1:port),
// since every call carries the API token.
func checkAPIURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("PURGE_CLOUDFLARE_API_URL %q: want an http(s) URL", redact(raw))
	}
	if u.Scheme == "https" || isLoopback(u.Hostname()) {
		return nil
	}
	return fmt.Errorf("PURGE_CLOUDFLARE_API_URL %q: plain http is allowed to a loopback host only (127.0.0.0/8, ::1, localhost), since the API token would cross the network in clear: use https://", redact(raw))
}

// isLoopback: localhost, or an address in 127.0.0.0/8 or ::1.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkUIExposure refuses an unauthenticated UI on a non-loopback address.
func (c *Config) checkUIExposure() error {
	if c.UIUser != "" && c.UIPassword != "" {
		return nil
	}
	host, _, err := net.SplitHostPort(c.HTTPAddr)
	if err != nil {
		return fmt.Errorf("PURGE_HTTP_ADDR %q: %v", c.HTTPAddr, err)
	}
	if isLoopback(host) {
		return nil
	}
	return fmt.Errorf("PURGE_HTTP_ADDR %q is not a loopback address: set PURGE_UI_USER and PURGE_UI_PASSWORD, or listen on 127.0.0.1", c.HTTPAddr)
}

// ResolvedPlan is PURGE_PLAN's preset with every override applied.
func (c *Config) ResolvedPlan() purge.Plan {
	p, _ := purge.PlanByName(c.Plan)
	c.overridePlan(&p)
	return p
}

// overridePlan applies the PURGE_FLEX_LIMIT … PURGE_MAX_FLEX overrides.
func (c *Config) overridePlan(p *purge.Plan) {
	if !c.FlexLimit.IsZero() {
		p.FlexRate = c.FlexLimit
	}
	if c.FlexBurst > 0 {
		p.FlexBurst = c.FlexBurst
	}
	if !c.URLLimit.IsZero() {
		p.URLRate = c.URLLimit
	}
	if c.URLBurst > 0 {
		p.URLBurst = c.URLBurst
	}
	if c.MaxFiles > 0 {
		p.MaxFiles = c.MaxFiles
	}
	if c.MaxFlex > 0 {
		p.MaxFlex = c.MaxFlex
	}
}

// WorkerConcurrency is the asynq concurrency to use.
func (c *Config) WorkerConcurrency() int {
	if c.Concurrency > 0 {
		return c.Concurrency
	}
	return 2*2*c.CallWindow + 8
}

// Usage writes every variable with its default and meaning.
func Usage(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 1, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "VARIABLE\tDEFAULT\tMEANING")
	err := envconfig.Usagef(Prefix, &Config{}, tw, `{{range .}}{{usage_key .}}	{{usage_default .}}	{{usage_description .}}
{{end}}`)
	if err != nil {
		return err
	}
	return tw.Flush()
}

// redact hides a URL's password.
func redact(u string) string {
	if at := strings.LastIndex(u, "@"); at > 0 {
		if scheme := strings.Index(u, "://"); scheme > 0 && scheme < at {
			return u[:scheme+3] + "…@" + u[at+1:]
		}
	}
	return u
}
