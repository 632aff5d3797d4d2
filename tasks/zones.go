package tasks

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/purgeq/purgeq/internal/keyspace"
	"github.com/purgeq/purgeq/purge"
)

// Zone is one Cloudflare zone this deployment purges.
type Zone struct {
	Name string // example.com
	ID   string // Cloudflare's zone identifier
}

// Zones is the PURGE_ZONES list: "example.com=<id>,example.org=<id>".
type Zones []Zone

// ParseZones reads the PURGE_ZONES format, naming every bad entry.
func ParseZones(s string) (Zones, error) {
	var zs Zones
	var bad []string
	seenName, seenID := map[string]bool{}, map[string]bool{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, id, ok := strings.Cut(part, "=")
		name, id = strings.ToLower(strings.TrimSpace(name)), strings.TrimSpace(id)
		switch {
		case !ok || name == "" || id == "":
			bad = append(bad, fmt.Sprintf("%q: want name=zone-id", part))
			continue
		case strings.ContainsAny(id, "/?# "):
			bad = append(bad, fmt.Sprintf("%q: zone id %q contains a character ids never have", part, id))
			continue
		case seenName[name] || seenID[id]:
			bad = append(bad, fmt.Sprintf("%q: zone listed twice", part))
			continue
		}
		if _, err := purge.Normalize(purge.Hosts, name); err != nil {
			bad = append(bad, fmt.Sprintf("%q: zone name: %v", part, err))
			continue
		}
		seenName[name], seenID[id] = true, true
		zs = append(zs, Zone{Name: name, ID: id})
	}
	if len(bad) > 0 {
		return nil, fmt.Errorf("PURGE_ZONES: %s", strings.Join(bad, "; "))
	}
	return zs, nil
}

// Decode lets envconfig parse Zones.
func (z *Zones) Decode(s string) error {
	v, err := ParseZones(s)
	if err != nil {
		return err
	}
	*z = v
	return nil
}

// String formats the list as ParseZones reads it.
func (z Zones) String() string {
	parts := make([]string, len(z))
	for i, zone := range z {
		parts[i] = zone.Name + "=" + zone.ID
	}
	return strings.Join(parts, ",")
}

// Lookup finds a zone by name or id.
func (z Zones) Lookup(nameOrID string) (Zone, bool) {
	key := strings.ToLower(strings.TrimSpace(nameOrID))
	for _, zone := range z {
		if zone.Name == key || strings.ToLower(zone.ID) == key {
			return zone, true
		}
	}
	return Zone{}, false
}

// ForHost finds the zone whose name is the longest suffix of host. For
// many hosts, build an Index once.
func (z Zones) ForHost(host string) (Zone, bool) { return z.Index().ForHost(host) }

// Brief names the zones for a message: all of a few, the first of many.
func (z Zones) Brief() string {
	const shown = 5
	if len(z) <= shown {
		return z.String()
	}
	return z[:shown].String() + fmt.Sprintf(",… (%d zones)", len(z))
}

// Index finds zones by host in time that does not grow with their number.
type Index struct{ byName map[string]Zone }

// Index builds an Index of the zones.
func (z Zones) Index() Index {
	x := Index{byName: make(map[string]Zone, len(z))}
	for _, zone := range z {
		x.byName[zone.Name] = zone
	}
	return x
}

// ForHost finds the zone whose name is the longest suffix of host: host
// itself, else its parent domains, longest first.
func (x Index) ForHost(host string) (Zone, bool) {
	host = strings.ToLower(host)
	for {
		if zone, ok := x.byName[host]; ok {
			return zone, true
		}
		dot := strings.IndexByte(host, '.')
		if dot < 0 {
			return Zone{}, false
		}
		host = host[dot+1:]
	}
}

// Holds reports whether host is the zone's name or a subdomain of it.
func (zone Zone) Holds(host string) bool {
	host = strings.ToLower(host)
	return host == zone.Name || strings.HasSuffix(host, "."+zone.Name)
}

// IDs lists the zone ids, sorted.
func (z Zones) IDs() []string {
	ids := make([]string, len(z))
	for i, zone := range z {
		ids[i] = zone.ID
	}
	sort.Strings(ids)
	return ids
}

// zonesKey holds the zones the workers run with, so that a producer with
// no PURGE_ZONES (a developer's second terminal, a CI step) uses the same.
const zonesKey = keyspace.Zones

// PublishZones records the worker's zones in Redis for producers.
func PublishZones(ctx context.Context, rdb redis.Cmdable, z Zones) error {
	return rdb.Set(ctx, zonesKey, z.String(), 0).Err()
}

// PublishedZones reads the zones a worker published; none is not an error.
func PublishedZones(ctx context.Context, rdb redis.Cmdable) (Zones, error) {
	s, err := rdb.Get(ctx, zonesKey).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return ParseZones(s)
}
