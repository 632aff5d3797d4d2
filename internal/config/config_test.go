package config

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/kelseyhightower/envconfig"
)

// markdownTable renders the variables as README's configuration table.
func markdownTable(t *testing.T) string {
	var b bytes.Buffer
	b.WriteString("| variable | default | meaning |\n|---|---|---|\n")
	err := envconfig.Usagef(Prefix, &Config{}, &b, "{{range .}}| `{{usage_key .}}` | {{with usage_default .}}`{{.}}`{{else}}—{{end}} | {{usage_description .}} |\n{{end}}")
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestReadmeTableInSync fails when README.md's configuration table differs
// from the code; the message carries the table to paste.
func TestReadmeTableInSync(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	want := markdownTable(t)
	if !strings.Contains(string(readme), want) {
		t.Errorf("README.md's configuration table is out of date; replace it with:\n\n%s", want)
	}
}

// TestContractVariables: every variable whose name operators and tests rely
// on (the README's configuration table) is read, with its documented default.
func TestContractVariables(t *testing.T) {
	table := markdownTable(t)
	for _, row := range []string{
		"`PURGE_REDIS_URL` | `redis://127.0.0.1:6379/0`", "`PURGE_CLOUDFLARE_API_URL` | `https://api.cloudflare.com/client/v4`",
		"`PURGE_CLOUDFLARE_API_TOKEN` | —", "`PURGE_CLOUDFLARE_API_TOKEN_FILE` | —", "`PURGE_ZONES` | —", "`PURGE_PLAN` | `free`",
		"`PURGE_GLOBAL_LIMIT` |", "`PURGE_COOLDOWN` | `5m`", "`PURGE_FLEX_LIMIT` |", "`PURGE_FLEX_BURST` |", "`PURGE_URL_LIMIT` |",
		"`PURGE_URL_BURST` |", "`PURGE_MAX_FILES` |", "`PURGE_MAX_FLEX` |", "`PURGE_BATCH_WAIT` | `2s`", "`PURGE_CONCURRENCY` |",
		"`PURGE_HTTP_ADDR` | `127.0.0.1:8080`", "`PURGE_UI_USER` | —", "`PURGE_UI_PASSWORD` | —", "`PURGE_INTAKE_ADDR` | `127.0.0.1:8081`",
		"`PURGE_INTAKE_TOKENS` | —", "`PURGE_LOG_LEVEL` | `info`", "`PURGE_LOG_FORMAT` |",
	} {
		if !strings.Contains(table, row) {
			t.Errorf("no row %q", row)
		}
	}
}

func TestUsageListsEveryVariable(t *testing.T) {
	var b bytes.Buffer
	if err := Usage(&b); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"PURGE_REDIS_URL", "PURGE_GLOBAL_LIMIT", "1000/5m", "PURGE_LOG_FORMAT", "PURGE_INTAKE_TOKENS"} {
		if !strings.Contains(b.String(), v) {
			t.Errorf("--help lacks %s", v)
		}
	}
}

func setenv(t *testing.T, kv map[string]string) {
	for _, k := range os.Environ() {
		if strings.HasPrefix(k, Prefix+"_") {
			name, _, _ := strings.Cut(k, "=")
			t.Setenv(name, "")
			os.Unsetenv(name)
		}
	}
	for k, v := range kv {
		t.Setenv(k, v)
	}
}

func TestWorkerChecksNameEveryProblem(t *testing.T) {
	setenv(t, map[string]string{"PURGE_HTTP_ADDR": "0.0.0.0:8080", "PURGE_MAX_FILES": "900", "PURGE_URL_BURST": "500"})
	c, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	err = c.CheckWorker()
	for _, want := range []string{"PURGE_CLOUDFLARE_API_TOKEN", "PURGE_MAX_FILES 900 exceeds PURGE_URL_BURST 500 by 400", "PURGE_UI_USER"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not mention %q", err, want)
		}
	}
}

func TestLoadRejectsBadValues(t *testing.T) {
	setenv(t, map[string]string{"PURGE_PLAN": "platinum", "PURGE_CALL_WINDOW": "0", "PURGE_LOG_FORMAT": "xml", "PURGE_REDIS_URL": "http://user:secret@host"})
	_, err := Load()
	for _, want := range []string{"PURGE_PLAN", "PURGE_CALL_WINDOW", "PURGE_LOG_FORMAT", "PURGE_REDIS_URL"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not mention %s", err, want)
		}
	}
	if err != nil && strings.Contains(err.Error(), "secret") {
		t.Errorf("the error leaks the Redis password: %v", err)
	}
	setenv(t, map[string]string{"PURGE_GLOBAL_LIMIT": "1200"})
	if _, err := Load(); err == nil || !strings.Contains(err.Error(), "N/DURATION") {
		t.Errorf("a bad rate was accepted: %v", err)
	}
	setenv(t, map[string]string{"PURGE_GLOBAL_LIMIT": "1000/5m", "PURGE_REDIS_REPLICAS": "1", "PURGE_REDIS_URL": "redis://n1:6379?addr=n2:6379&addr=n3:6379"})
	if _, err := Load(); err == nil || !strings.Contains(err.Error(), "PURGE_REDIS_REPLICAS cannot be used with a Redis Cluster") {
		t.Errorf("replicas with a Cluster URL were accepted: %v", err)
	}
}

func TestTokenFileAndPlanOverrides(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(dir+"/token", []byte("from-file\n"), 0o600)
	os.WriteFile(dir+"/ui", []byte("ui-pass\n"), 0o600)
	os.WriteFile(dir+"/intake", []byte("tok-a\ntok-b\n"), 0o600)
	setenv(t, map[string]string{"PURGE_CLOUDFLARE_API_TOKEN_FILE": dir + "/token", "PURGE_UI_PASSWORD_FILE": dir + "/ui", "PURGE_INTAKE_TOKENS_FILE": dir + "/intake",
		"PURGE_PLAN": "Enterprise", "PURGE_FLEX_LIMIT": "7/1s", "PURGE_GLOBAL_LIMIT": "100/10s"})
	c, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	if c.APIToken != "from-file" || c.UIPassword != "ui-pass" || strings.Join(c.IntakeTokens, ",") != "tok-a,tok-b" {
		t.Errorf("secrets from files: %q %q %q", c.APIToken, c.UIPassword, c.IntakeTokens)
	}
	setenv(t, map[string]string{"PURGE_UI_PASSWORD_FILE": dir + "/missing"})
	if _, err := Load(); err == nil || !strings.Contains(err.Error(), "PURGE_UI_PASSWORD_FILE") {
		t.Errorf("a missing secret file: %v", err)
	}
	setenv(t, map[string]string{"PURGE_CLOUDFLARE_API_TOKEN_FILE": dir + "/token", "PURGE_PLAN": "Enterprise", "PURGE_FLEX_LIMIT": "7/1s", "PURGE_GLOBAL_LIMIT": "100/10s"})
	if c, err = Load(); err != nil {
		t.Fatal(err)
	}
	p := c.ResolvedPlan()
	if p.MaxFiles != 500 || p.FlexRate.String() != "7/1s" || p.FlexBurst != 500 {
		t.Errorf("plan = %+v", p)
	}
	if l := c.AccountLimits(c.Accounts[0]); l.Guard.String() != "100ms" || l.Token == "from-file" {
		t.Errorf("limits = %+v", l)
	}
}

// TestEmptyTokensRefused: a token left empty once trimmed (a trailing comma,
// only whitespace, U+00A0 included) is a configuration error naming the
// variable, never a token that matches; surrounding whitespace is trimmed.
func TestEmptyTokensRefused(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want []string
	}{
		{map[string]string{"PURGE_INTAKE_TOKENS": "s3cr3t,"}, []string{"PURGE_INTAKE_TOKENS: token 2 of 2 is empty (a trailing comma?)"}},
		{map[string]string{"PURGE_INTAKE_TOKENS": ",s3cr3t"}, []string{"PURGE_INTAKE_TOKENS: token 1 of 2 is empty"}},
		{map[string]string{"PURGE_INTAKE_TOKENS": "s3cr3t,\u00a0"}, []string{"PURGE_INTAKE_TOKENS: token 2 of 2 is empty (only whitespace)"}},
		{map[string]string{"PURGE_INTAKE_TOKENS": "s3cr3t, \t ,other"}, []string{"PURGE_INTAKE_TOKENS: token 2 of 3 is empty"}},
		{map[string]string{"PURGE_CLOUDFLARE_API_TOKEN": " \u00a0 "}, []string{"PURGE_CLOUDFLARE_API_TOKEN is only whitespace"}},
		// every problem at once
		{map[string]string{"PURGE_INTAKE_TOKENS": "a,,b,", "PURGE_PLAN": "platinum"},
			[]string{"token 2 of 4 is empty", "token 4 of 4 is empty (a trailing comma?)", "PURGE_PLAN"}},
	} {
		setenv(t, tc.env)
		c, err := Load()
		for _, want := range tc.want {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%q: error %v does not mention %q", tc.env, err, want)
			}
		}
		if c != nil && hasBlank(c.IntakeTokens) {
			t.Errorf("%q: an empty token survived: %q", tc.env, c.IntakeTokens)
		}
	}
}

func TestTokensTrimmed(t *testing.T) {
	setenv(t, map[string]string{"PURGE_INTAKE_TOKENS": " s3cr3t ,\u00a0other\t", "PURGE_CLOUDFLARE_API_TOKEN": "\u00a0cf-token \n"})
	c, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.IntakeTokens, "|") != "s3cr3t|other" || c.APIToken != "cf-token" {
		t.Errorf("tokens not trimmed: intake %q, API %q", c.IntakeTokens, c.APIToken)
	}
	// the fingerprint (the limits' scope) is the trimmed token's
	setenv(t, map[string]string{"PURGE_CLOUDFLARE_API_TOKEN": "cf-token"})
	plain, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	if c.AccountLimits(c.Accounts[0]).Token != plain.AccountLimits(plain.Accounts[0]).Token {
		t.Errorf("scope differs with surrounding whitespace: %q vs %q", c.Accounts[0].Token, plain.Accounts[0].Token)
	}
}

func TestTokenFilesTrimmedAndEmptyRefused(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := dir + "/" + name
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	setenv(t, map[string]string{"PURGE_CLOUDFLARE_API_TOKEN_FILE": write("cf", "\u00a0cf-token\r\n"),
		"PURGE_INTAKE_TOKENS_FILE": write("intake", " tok-a\r\n\u00a0tok-b , tok-c\n")})
	c, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	if c.APIToken != "cf-token" || strings.Join(c.IntakeTokens, "|") != "tok-a|tok-b|tok-c" {
		t.Errorf("tokens from files not trimmed: API %q, intake %q", c.APIToken, c.IntakeTokens)
	}
	for _, tc := range []struct {
		env  map[string]string
		want []string
	}{
		{map[string]string{"PURGE_CLOUDFLARE_API_TOKEN_FILE": write("cf-blank", " \u00a0\n")}, []string{"PURGE_CLOUDFLARE_API_TOKEN_FILE", "is empty"}},
		{map[string]string{"PURGE_INTAKE_TOKENS_FILE": write("intake-blank", "\n\u00a0\n")}, []string{"PURGE_INTAKE_TOKENS_FILE", "holds no token"}},
		{map[string]string{"PURGE_INTAKE_TOKENS_FILE": write("intake-comma", "tok-a,\n")}, []string{"PURGE_INTAKE_TOKENS_FILE", "token 2 of 2 is empty"}},
		{map[string]string{"PURGE_INTAKE_TOKENS_FILE": write("intake-gap", "tok-a\n \u00a0\ntok-b\n")}, []string{"PURGE_INTAKE_TOKENS_FILE", "token 2 of 3 is empty"}},
		// every problem at once: an unreadable file does not hide the others
		{map[string]string{"PURGE_UI_PASSWORD_FILE": dir + "/missing", "PURGE_INTAKE_TOKENS_FILE": write("intake-comma2", ",tok")},
			[]string{"PURGE_UI_PASSWORD_FILE", "PURGE_INTAKE_TOKENS_FILE", "token 1 of 2 is empty"}},
	} {
		setenv(t, tc.env)
		c, err := Load()
		for _, want := range tc.want {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%q: error %v does not mention %q", tc.env, err, want)
			}
		}
		if c != nil && hasBlank(c.IntakeTokens) {
			t.Errorf("%q: an empty token survived: %q", tc.env, c.IntakeTokens)
		}
	}
}

func hasBlank(tokens []string) bool {
	for _, tok := range tokens {
		if strings.TrimSpace(tok) == "" {
			return true
		}
	}
	return false
}

// TestAPIURLPlainHTTPOnlyToLoopback: the worker refuses a plain-http API URL
// to any host but a loopback one (the token would cross the network in
// clear), naming the variable, alongside every other problem.
func TestAPIURLPlainHTTPOnlyToLoopback(t *testing.T) {
	base := map[string]string{"PURGE_CLOUDFLARE_API_TOKEN": "tok", "PURGE_ZONES": "a.example=za"}
	for _, tc := range []struct {
		url string
		ok  bool
	}{
		{"https://api.cloudflare.com/client/v4", true},
		{"https://10.0.0.5:8443/client/v4", true},
		{"http://127.0.0.1:41234", true},
		{"http://127.8.9.10:80/client/v4", true},
		{"http://[::1]:8080", true},
		{"http://localhost:8080/client/v4", true},
		{"http://LocalHost:8080", true},
		{"http://api.cloudflare.com/client/v4", false},
		{"http://10.0.0.5:8080", false},
		{"http://[::2]:8080", false},
		{"http://localhost.evil.example/", false},
		{"http://128.0.0.1/", false},
		{"http://user:s3cret@api.example/", false},
		{"ftp://api.cloudflare.com/", false},
		{"https://", false},
	} {
		env := map[string]string{"PURGE_CLOUDFLARE_API_URL": tc.url}
		for k, v := range base {
			env[k] = v
		}
		setenv(t, env)
		c, err := Load()
		if err != nil {
			t.Fatalf("%s: Load: %v", tc.url, err)
		}
		err = c.CheckWorker()
		if tc.ok && err != nil {
			t.Errorf("%s refused: %v", tc.url, err)
		}
		if !tc.ok && (err == nil || !strings.Contains(err.Error(), "PURGE_CLOUDFLARE_API_URL")) {
			t.Errorf("%s accepted (or the error does not name the variable): %v", tc.url, err)
		}
		if err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%s: the error leaks a password: %v", tc.url, err)
		}
	}
	// with every other problem at once
	setenv(t, map[string]string{"PURGE_CLOUDFLARE_API_URL": "http://api.example/client/v4", "PURGE_HTTP_ADDR": "0.0.0.0:8080"})
	c, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	err = c.CheckWorker()
	for _, want := range []string{"PURGE_CLOUDFLARE_API_URL \"http://api.example/client/v4\": plain http", "PURGE_CLOUDFLARE_API_TOKEN", "PURGE_UI_USER"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not mention %q", err, want)
		}
	}
}

// TestMetricsAddr: PURGE_METRICS_ADDR is empty by default (metrics on
// PURGE_HTTP_ADDR), needs no UI credentials on a non-loopback address, and
// must be a host:port other than PURGE_HTTP_ADDR.
func TestMetricsAddr(t *testing.T) {
	base := map[string]string{"PURGE_CLOUDFLARE_API_TOKEN": "tok", "PURGE_ZONES": "a.example=za"}
	check := func(extra map[string]string) (*Config, error) {
		t.Helper()
		env := map[string]string{}
		for k, v := range base {
			env[k] = v
		}
		for k, v := range extra {
			env[k] = v
		}
		setenv(t, env)
		c, err := Load()
		if err != nil {
			t.Fatal(err)
		}
		return c, c.CheckWorker()
	}
	if c, err := check(nil); err != nil || c.MetricsAddr != "" {
		t.Errorf("default: %q, %v", c.MetricsAddr, err)
	}
	if c, err := check(map[string]string{"PURGE_METRICS_ADDR": "0.0.0.0:9090"}); err != nil || c.MetricsAddr != "0.0.0.0:9090" {
		t.Errorf("a non-loopback metrics address without UI credentials: %q, %v", c.MetricsAddr, err)
	}
	for addr, want := range map[string]string{"9090": "PURGE_METRICS_ADDR \"9090\"", "127.0.0.1:8080": "is PURGE_HTTP_ADDR too"} {
		if _, err := check(map[string]string{"PURGE_METRICS_ADDR": addr}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("PURGE_METRICS_ADDR=%s: %v, want %q", addr, err, want)
		}
	}
}
