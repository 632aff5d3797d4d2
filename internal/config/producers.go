package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/purgeq/purgeq/limits/rate"
	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/tasks"
)

// Priorities a producer's requests may have.
var Priorities = []string{"high", "normal", "bulk"}

// Producer is one caller of the intake: what it may purge and how much.
type Producer struct {
	// Name is recorded as the producer of every request it makes.
	Name string
	// Token is its bearer token (trimmed; never logged).
	Token string
	// Zones it may purge, as zone ids; empty means every zone.
	Zones []string
	// Kinds it may purge (files, tags, hosts, prefixes).
	Kinds []purge.Kind
	// Everything: whether it may purge everything in a zone.
	Everything bool
	// Priority of its requests: high, normal or bulk.
	Priority string
	// Rate bounds the items it may queue per window (zero: unbounded).
	Rate rate.Rate
	// Legacy marks a token from PURGE_INTAKE_TOKENS: every right, and
	// idempotency keys shared with the CLI (as before named producers).
	Legacy bool
}

// TokenProducer is the n-th token of PURGE_INTAKE_TOKENS as a producer:
// every zone and kind, purge-everything allowed, priority normal, keys
// shared with the CLI (as before named producers).
func TokenProducer(n int, token string) Producer {
	return Producer{Name: "intake-" + strconv.Itoa(n), Token: token, Kinds: slices.Clone(purge.Kinds[:4]),
		Everything: true, Priority: "normal", Legacy: true}
}

// MayKind reports whether the producer may purge items of kind k.
func (p Producer) MayKind(k purge.Kind) bool {
	if k == purge.Everything {
		return p.Everything
	}
	return slices.Contains(p.Kinds, k)
}

// MayZone reports whether the producer may purge zone id.
func (p Producer) MayZone(id string) bool { return len(p.Zones) == 0 || slices.Contains(p.Zones, id) }

// fileProducer is a producer as PURGE_CONFIG_FILE spells it.
type fileProducer struct {
	Name            string   `yaml:"name"`
	Token           string   `yaml:"token"`
	TokenFile       string   `yaml:"token_file"`
	Zones           []string `yaml:"zones"`
	Kinds           []string `yaml:"kinds"`
	PurgeEverything bool     `yaml:"purge_everything"`
	Priority        string   `yaml:"priority"`
	Rate            string   `yaml:"rate"`
}

// configFile is PURGE_CONFIG_FILE.
type configFile struct {
	Accounts  []fileAccount  `yaml:"accounts"`
	Producers []fileProducer `yaml:"producers"`
}

// readConfigFile reads PURGE_CONFIG_FILE (none: an empty file), refusing
// unknown fields.
func readConfigFile(path string) (configFile, error) {
	var f configFile
	if path == "" {
		return f, nil
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return f, fmt.Errorf("PURGE_CONFIG_FILE: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return configFile{}, fmt.Errorf("PURGE_CONFIG_FILE %s: %w", path, err)
	}
	return f, nil
}

// loadProducers resolves the producers of the configuration file at path
// and adds those of PURGE_INTAKE_TOKENS (every right, priority normal).
// zones are the configured zones (empty: not known here, the zones a
// producer names are then not checked). Every problem is named.
func loadProducers(path string, file []fileProducer, zones tasks.Zones, intakeTokens []string) ([]Producer, error) {
	var errs []error
	var out []Producer
	for i, fp := range file {
		p, perrs := fp.resolve(fmt.Sprintf("PURGE_CONFIG_FILE %s: producers[%d]", path, i), zones)
		errs = append(errs, perrs...)
		out = append(out, p)
	}
	for i, t := range intakeTokens {
		out = append(out, TokenProducer(i+1, t))
	}
	names, tokens := map[string]int{}, map[string]int{}
	for i, p := range out {
		if p.Name != "" {
			if j, dup := names[p.Name]; dup {
				errs = append(errs, fmt.Errorf("producers %d and %d are both named %q", j+1, i+1, p.Name))
			}
			names[p.Name] = i
		}
		if p.Token != "" {
			if j, dup := tokens[p.Token]; dup {
				errs = append(errs, fmt.Errorf("producers %q and %q have the same token", out[j].Name, p.Name))
			}
			tokens[p.Token] = i
		}
	}
	return out, errors.Join(errs...)
}

// resolve checks one producer of the file; where names where it is.
func (fp fileProducer) resolve(where string, zones tasks.Zones) (Producer, []error) {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(where+": "+format, a...)) }
	p := Producer{Name: strings.TrimSpace(fp.Name), Everything: fp.PurgeEverything, Priority: fp.Priority}
	if p.Name == "" {
		bad("name is missing")
	} else {
		where += " (" + p.Name + ")"
	}
	token, err := fileSecret(fp.Token, fp.TokenFile, "token", "token_file")
	if err != nil {
		bad("%v", err)
	}
	p.Token = token
	for _, z := range fp.Zones {
		if len(zones) == 0 {
			p.Zones = append(p.Zones, z)
			continue
		}
		zone, ok := zones.Lookup(z)
		if !ok {
			bad("zone %q is not one of the configured zones (%s)", z, zones)
			continue
		}
		p.Zones = append(p.Zones, zone.ID)
	}
	if len(fp.Kinds) == 0 {
		p.Kinds = slices.Clone(purge.Kinds[:4])
	}
	for _, k := range fp.Kinds {
		if kind := purge.Kind(k); slices.Contains(purge.Kinds[:4], kind) {
			p.Kinds = append(p.Kinds, kind)
		} else {
			bad("kind %q is none of files, tags, hosts, prefixes (purge-everything is purge_everything: true)", k)
		}
	}
	if p.Priority == "" {
		p.Priority = "normal"
	}
	if !slices.Contains(Priorities, p.Priority) {
		bad("priority %q is none of high, normal, bulk", p.Priority)
	}
	if fp.Rate != "" {
		r, err := rate.Parse(fp.Rate)
		if err != nil {
			bad("rate: %v", err)
		}
		p.Rate = r
	}
	return p, errs
}

// fileSecret is a token the configuration file gives as a value (field
// valueName) or a file (fileName), trimmed; both, neither or an empty one
// is an error naming the fields.
func fileSecret(value, file, valueName, fileName string) (string, error) {
	var v string
	switch {
	case value != "" && file != "":
		return "", fmt.Errorf("%s and %s are both set; keep one", valueName, fileName)
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("%s: %v", fileName, err)
		}
		v = strings.TrimSpace(string(b))
	default:
		v = strings.TrimSpace(value)
	}
	if v == "" {
		return "", fmt.Errorf("the token is empty (%s or %s)", valueName, fileName)
	}
	return v, nil
}

// ResolveProducerZones maps the zones producers name to ids once the zones
// are known (the intake may learn them from the workers after loading its
// configuration). A zone none of them has is named in the error.
func ResolveProducerZones(ps []Producer, zones tasks.Zones) error {
	var errs []error
	for i := range ps {
		for j, z := range ps[i].Zones {
			zone, ok := zones.Lookup(z)
			if !ok {
				errs = append(errs, fmt.Errorf("producer %s: zone %q is not one of the zones the workers run with (%s)", ps[i].Name, z, zones))
				continue
			}
			ps[i].Zones[j] = zone.ID
		}
	}
	return errors.Join(errs...)
}
