package config

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/purgeq/purgeq/limits"
	"github.com/purgeq/purgeq/limits/rate"
	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/tasks"
)

// DefaultAccount names the account the variables alone describe.
const DefaultAccount = "default"

// Account is one Cloudflare account: its token, caps, purge buckets and
// global window. Cloudflare shares the purge buckets across the account's
// zones and the global window across everything that uses the token: two
// accounts with one token share its window and cooldown.
type Account struct {
	Name string
	// Token is the API token (trimmed; never logged).
	Token string
	// Plan holds the caps and purge buckets, overrides applied.
	Plan     purge.Plan
	Global   rate.Rate
	Cooldown time.Duration
	// Zones are the account's zones; empty: listed through the API.
	Zones tasks.Zones
}

// Discovers reports whether the account's zones come from the API.
func (a Account) Discovers() bool { return len(a.Zones) == 0 }

// fileAccount is an account as PURGE_CONFIG_FILE spells it.
type fileAccount struct {
	Name         string            `yaml:"name"`
	APIToken     string            `yaml:"api_token"`
	APITokenFile string            `yaml:"api_token_file"`
	Plan         string            `yaml:"plan"`
	GlobalLimit  string            `yaml:"global_limit"`
	FlexLimit    string            `yaml:"flex_limit"`
	FlexBurst    int               `yaml:"flex_burst"`
	URLLimit     string            `yaml:"url_limit"`
	URLBurst     int               `yaml:"url_burst"`
	MaxFiles     int               `yaml:"max_files"`
	MaxFlex      int               `yaml:"max_flex"`
	Cooldown     string            `yaml:"cooldown"`
	Zones        map[string]string `yaml:"zones"`
}

// envAccount is the account the variables describe.
func (c *Config) envAccount() Account {
	return Account{Name: DefaultAccount, Token: c.APIToken, Plan: c.ResolvedPlan(), Global: c.GlobalLimit, Cooldown: c.Cooldown, Zones: c.Zones}
}

// resolve checks one account of the file; where names where it is. What
// the file leaves out, the variables set (PURGE_PLAN, PURGE_GLOBAL_LIMIT,
// PURGE_FLEX_LIMIT, …), else the plan's preset.
func (fa fileAccount) resolve(where string, c *Config) (Account, []error) {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(where+": "+format, a...)) }
	a := Account{Name: strings.TrimSpace(fa.Name), Global: c.GlobalLimit, Cooldown: c.Cooldown}
	if a.Name == "" {
		bad("name is missing")
	} else {
		where += " (" + a.Name + ")"
	}
	token, err := fileSecret(fa.APIToken, fa.APITokenFile, "api_token", "api_token_file")
	if err != nil {
		bad("%v", err)
	}
	a.Token = token
	plan := c.Plan
	if fa.Plan != "" {
		plan = fa.Plan
	}
	p, err := purge.PlanByName(plan)
	if err != nil {
		bad("plan: %v", err)
	}
	c.overridePlan(&p)
	parse := func(field, v string, into *rate.Rate) {
		if v == "" {
			return
		}
		r, err := rate.Parse(v)
		if err != nil {
			bad("%s: %v", field, err)
			return
		}
		*into = r
	}
	parse("global_limit", fa.GlobalLimit, &a.Global)
	parse("flex_limit", fa.FlexLimit, &p.FlexRate)
	parse("url_limit", fa.URLLimit, &p.URLRate)
	for field, v := range map[string]struct {
		n    int
		into *int
	}{"flex_burst": {fa.FlexBurst, &p.FlexBurst}, "url_burst": {fa.URLBurst, &p.URLBurst}, "max_files": {fa.MaxFiles, &p.MaxFiles}, "max_flex": {fa.MaxFlex, &p.MaxFlex}} {
		switch {
		case v.n < 0:
			bad("%s must not be negative (got %d)", field, v.n)
		case v.n > 0:
			*v.into = v.n
		}
	}
	if p.MaxFiles > p.URLBurst {
		bad("max_files %d exceeds url_burst %d: a full URL batch could never be sent", p.MaxFiles, p.URLBurst)
	}
	a.Plan = p
	if fa.Cooldown != "" {
		d, err := time.ParseDuration(fa.Cooldown)
		if err != nil || d < 0 {
			bad("cooldown %q: want a Go duration such as 5m", fa.Cooldown)
		}
		a.Cooldown = d
	}
	names := make([]string, 0, len(fa.Zones))
	for name := range fa.Zones {
		names = append(names, name)
	}
	slices.Sort(names)
	var spec []string
	for _, name := range names {
		spec = append(spec, name+"="+fa.Zones[name])
	}
	zones, err := tasks.ParseZones(strings.Join(spec, ","))
	if err != nil {
		bad("zones: %v", strings.TrimPrefix(err.Error(), "PURGE_ZONES: "))
	}
	a.Zones = zones
	return a, errs
}

// loadAccounts sets c.Accounts: the file's accounts, else the one the
// variables describe. With accounts in the file, PURGE_ZONES and the API
// token variables would describe nothing, and are refused. c.Zones becomes
// every configured zone (producers check zone names against it).
func (c *Config) loadAccounts(file []fileAccount, path string) error {
	if len(file) == 0 {
		c.Accounts = []Account{c.envAccount()}
		return nil
	}
	var errs []error
	for name, set := range map[string]bool{"PURGE_ZONES": len(c.Zones) > 0, "PURGE_ZONES_FILE": c.ZonesFile != "",
		"PURGE_CLOUDFLARE_API_TOKEN": c.APIToken != ""} {
		if set {
			errs = append(errs, fmt.Errorf("%s is set, but PURGE_CONFIG_FILE %s lists accounts: give each account its token and zones in the file", name, path))
		}
	}
	c.Accounts, c.Zones = nil, nil
	names, zones := map[string]bool{}, map[string]string{}
	for i, fa := range file {
		a, aerrs := fa.resolve(fmt.Sprintf("PURGE_CONFIG_FILE %s: accounts[%d]", path, i), c)
		errs = append(errs, aerrs...)
		if names[a.Name] {
			errs = append(errs, fmt.Errorf("PURGE_CONFIG_FILE %s: two accounts are named %q", path, a.Name))
		}
		names[a.Name] = true
		for _, z := range a.Zones {
			if other, dup := zones[z.Name]; dup {
				errs = append(errs, fmt.Errorf("PURGE_CONFIG_FILE %s: zone %s is in accounts %q and %q; a zone belongs to one account", path, z.Name, other, a.Name))
			}
			zones[z.Name] = a.Name
		}
		c.Accounts = append(c.Accounts, a)
		c.Zones = append(c.Zones, a.Zones...)
	}
	return errors.Join(errs...)
}

// readZonesFile adds PURGE_ZONES_FILE's zones (one name=id a line; blank
// lines and # comments skipped) to PURGE_ZONES'.
func (c *Config) readZonesFile() error {
	if c.ZonesFile == "" {
		return nil
	}
	raw, err := os.ReadFile(c.ZonesFile)
	if err != nil {
		return fmt.Errorf("PURGE_ZONES_FILE: %w", err)
	}
	var spec []string
	for line := range strings.Lines(string(raw)) {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			spec = append(spec, line)
		}
	}
	zones, err := tasks.ParseZones(strings.Join(append([]string{c.Zones.String()}, spec...), ","))
	if err != nil {
		return fmt.Errorf("PURGE_ZONES_FILE %s: %v", c.ZonesFile, strings.TrimPrefix(err.Error(), "PURGE_ZONES: "))
	}
	c.Zones = zones
	return nil
}

// AccountLimits is the limiter configuration of one account.
func (c *Config) AccountLimits(a Account) limits.Config {
	guard := c.GlobalGuard
	if guard == 0 {
		guard = min(time.Second, a.Global.Per/100)
	}
	name := a.Name
	if name == DefaultAccount {
		name = "" // the keys a single-account deployment always used
	}
	return limits.Config{
		Token:             limits.Fingerprint(a.Token),
		Account:           name,
		Global:            a.Global,
		Guard:             guard,
		GlobalCountsFiles: c.GlobalCountsFiles,
		Flex:              limits.Bucket{Rate: a.Plan.FlexRate, Burst: a.Plan.FlexBurst},
		URL:               limits.Bucket{Rate: a.Plan.URLRate, Burst: a.Plan.URLBurst},
	}
}
