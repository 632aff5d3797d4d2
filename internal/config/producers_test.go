package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/tasks"
)

func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

var testZones = tasks.Zones{{Name: "blog.example.com", ID: "zblog"}, {Name: "shop.example.com", ID: "zshop"}}

func TestProducersFromFile(t *testing.T) {
	secret := writeFile(t, "cms", "  cms-secret\n")
	path := writeFile(t, "purgeq.yaml", `
producers:
  - name: cms-blog
    token_file: `+secret+`
    zones: [blog.example.com]
    kinds: [files, tags]
    priority: high
    rate: 6000/1m
  - name: importer
    token: imp-secret
    priority: bulk
`)
	ps, err := loadFileProducers(path, testZones, []string{"legacy"})
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 3 {
		t.Fatalf("%d producers, want 3: %+v", len(ps), ps)
	}
	cms, imp, legacy := ps[0], ps[1], ps[2]
	if cms.Token != "cms-secret" || !cms.MayZone("zblog") || cms.MayZone("zshop") || !cms.MayKind(purge.Tags) || cms.MayKind(purge.Hosts) ||
		cms.MayKind(purge.Everything) || cms.Priority != "high" || cms.Rate.N != 6000 {
		t.Errorf("cms-blog: %+v", cms)
	}
	if !imp.MayZone("zshop") || !imp.MayKind(purge.Prefixes) || imp.MayKind(purge.Everything) || imp.Priority != "bulk" || imp.Legacy {
		t.Errorf("importer: %+v", imp)
	}
	if !legacy.Legacy || !legacy.MayKind(purge.Everything) || !legacy.MayZone("zshop") || legacy.Priority != "normal" {
		t.Errorf("a PURGE_INTAKE_TOKENS token lost today's rights: %+v", legacy)
	}
}

func TestProducersFileProblemsNamed(t *testing.T) {
	path := writeFile(t, "bad.yaml", `
producers:
  - name: a
    token: same
    zones: [nowhere.example]
    kinds: [files, everything]
    priority: urgent
    rate: fast
  - name: a
    token: same
  - name: b
    token: "  "
  - name: c
    token: legacy
`)
	_, err := loadFileProducers(path, testZones, []string{"legacy"})
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{`zone "nowhere.example"`, `kind "everything"`, `priority "urgent"`, "rate:", `both named "a"`,
		`"a" and "a" have the same token`, "producers[2] (b): the token is empty", `"c" and "intake-1" have the same token`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "same\"") || strings.Contains(err.Error(), "legacy\"") {
		t.Errorf("a token appears in the error: %v", err)
	}
}

func TestProducersFileUnknownFieldsAndAccounts(t *testing.T) {
	for text, want := range map[string]string{
		"producers:\n  - name: a\n    token: t\n    zone: [x]\n": "field zone not found",
		"producer:\n  - name: a\n":                               "field producer not found",
		"accounts:\n  - name: main\n    token: x\n":              "field token not found",
	} {
		_, err := loadFileProducers(writeFile(t, "f.yaml", text), testZones, nil)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", text, err, want)
		}
	}
}

// loadFileProducers reads the producers of the file at path.
func loadFileProducers(path string, zones tasks.Zones, intakeTokens []string) ([]Producer, error) {
	f, err := readConfigFile(path)
	if err != nil {
		return nil, err
	}
	return loadProducers(path, f.Producers, zones, intakeTokens)
}

func TestResolveProducerZones(t *testing.T) {
	ps := []Producer{{Name: "a", Zones: []string{"blog.example.com", "zshop"}}, {Name: "b", Zones: []string{"elsewhere.example"}}}
	err := ResolveProducerZones(ps, testZones)
	if ps[0].Zones[0] != "zblog" || ps[0].Zones[1] != "zshop" || err == nil || !strings.Contains(err.Error(), `producer b: zone "elsewhere.example"`) {
		t.Errorf("zones %v, error %v", ps[0].Zones, err)
	}
}
