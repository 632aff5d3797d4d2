package config

import (
	"strings"
	"testing"
)

func TestAccountsFromFile(t *testing.T) {
	secret := writeFile(t, "cf_main", " main-token\n")
	path := writeFile(t, "purgeq.yaml", `
accounts:
  - name: main
    api_token_file: `+secret+`
    plan: business
    global_limit: 1000/5m
    url_burst: 2000
    cooldown: 1m
    zones:
      example.com: z1
      shop.example.com: z2
  - name: brand-b
    api_token: b-token
    plan: free
producers:
  - name: cms
    token: cms-token
    zones: [shop.example.com]
`)
	setenv(t, map[string]string{"PURGE_CONFIG_FILE": path, "PURGE_FLEX_LIMIT": "7/1s"})
	c, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Accounts) != 2 {
		t.Fatalf("accounts %+v", c.Accounts)
	}
	main, b := c.Accounts[0], c.Accounts[1]
	if main.Name != "main" || main.Token != "main-token" || main.Plan.Name != "business" || main.Plan.URLBurst != 2000 ||
		main.Plan.FlexRate.String() != "7/1s" || main.Global.String() != "1000/5m" || main.Cooldown.String() != "1m0s" || len(main.Zones) != 2 || main.Discovers() {
		t.Errorf("main = %+v", main)
	}
	if b.Name != "brand-b" || b.Plan.MaxFiles != 100 || b.Cooldown != c.Cooldown || !b.Discovers() {
		t.Errorf("brand-b = %+v", b)
	}
	if zone, ok := c.Zones.Lookup("shop.example.com"); !ok || zone.ID != "z2" || c.Producers[0].Zones[0] != "z2" {
		t.Errorf("zones %v, producer zones %v", c.Zones, c.Producers[0].Zones)
	}
	// each account its own buckets; a token shared would share the window
	lm, lb := c.AccountLimits(main), c.AccountLimits(b)
	if lm.Account != "main" || lb.Account != "brand-b" || lm.Token == lb.Token || lm.URL.Burst != 2000 {
		t.Errorf("limits %+v / %+v", lm, lb)
	}
	if err := c.CheckWorker(); err != nil {
		t.Errorf("CheckWorker: %v", err)
	}
}

func TestAccountsFileProblemsNamed(t *testing.T) {
	path := writeFile(t, "purgeq.yaml", `
accounts:
  - name: a
    api_token: ta
    plan: platinum
    zones: {example.com: z1}
  - name: a
    api_token: tb
    max_files: 900
    url_burst: 500
    global_limit: lots
    zones: {example.com: z2}
  - api_token_file: /nonexistent/token
`)
	setenv(t, map[string]string{"PURGE_CONFIG_FILE": path, "PURGE_ZONES": "other.example=z9", "PURGE_CLOUDFLARE_API_TOKEN": "env-token"})
	_, err := Load()
	for _, want := range []string{
		`accounts[0] (a): plan: unknown plan "platinum"`,
		`two accounts are named "a"`,
		`accounts[1] (a): max_files 900 exceeds url_burst 500`,
		`accounts[1] (a): global_limit`,
		`zone example.com is in accounts "a" and "a"`,
		`accounts[2]: name is missing`,
		`accounts[2]: api_token_file`,
		`PURGE_ZONES is set, but PURGE_CONFIG_FILE`,
		`PURGE_CLOUDFLARE_API_TOKEN is set, but PURGE_CONFIG_FILE`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "ta") && strings.Contains(err.Error(), "tb\"") {
		t.Errorf("a token appears in the error: %v", err)
	}
}

func TestZonesFile(t *testing.T) {
	path := writeFile(t, "zones", "# the shop\nshop.example.com=z2\n\nexample.org = z3\n")
	setenv(t, map[string]string{"PURGE_ZONES_FILE": path, "PURGE_ZONES": "example.com=z1"})
	c, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Zones) != 3 || len(c.Accounts[0].Zones) != 3 {
		t.Errorf("zones %v", c.Zones)
	}
	bad := writeFile(t, "bad", "example.net\n")
	setenv(t, map[string]string{"PURGE_ZONES_FILE": bad})
	if _, err := Load(); err == nil || !strings.Contains(err.Error(), `PURGE_ZONES_FILE `+bad+`: "example.net": want name=zone-id`) {
		t.Errorf("bad zones file: %v", err)
	}
}
