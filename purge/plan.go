package purge

import (
	"fmt"
	"strings"
	"time"

	"github.com/purgeq/purgeq/limits/rate"
)

// Plan holds the caps and purge buckets of one Cloudflare plan. Every value
// changed over the years (https://developers.cloudflare.com/cache/how-to/purge-cache/
// lists today's), so the presets are defaults that configuration overrides.
type Plan struct {
	Name string
	// MaxFiles is the most URLs in one request; MaxFlex the most tags, hosts
	// or prefixes.
	MaxFiles, MaxFlex int
	// FlexRate refills the bucket shared by tag, host, prefix and
	// purge-everything requests (one token per request); FlexBurst is its size.
	FlexRate  rate.Rate
	FlexBurst int
	// URLRate refills the URL bucket, counted in URLs; URLBurst is its size.
	URLRate  rate.Rate
	URLBurst int
}

// Plans are Cloudflare's documented values as of autumn 2026
// (https://developers.cloudflare.com/cache/how-to/purge-cache/#availability-and-limits).
// The URL bucket is documented as a per-second moving average; it is
// modelled as a bucket holding one second of URLs.
var Plans = map[string]Plan{
	"free": {Name: "free", MaxFiles: 100, MaxFlex: 100,
		FlexRate: rate.Per(5, time.Minute), FlexBurst: 25,
		URLRate: rate.Per(800, time.Second), URLBurst: 800},
	"pro": {Name: "pro", MaxFiles: 100, MaxFlex: 100,
		FlexRate: rate.Per(5, time.Second), FlexBurst: 25,
		URLRate: rate.Per(1500, time.Second), URLBurst: 1500},
	"business": {Name: "business", MaxFiles: 100, MaxFlex: 100,
		FlexRate: rate.Per(10, time.Second), FlexBurst: 50,
		URLRate: rate.Per(1500, time.Second), URLBurst: 1500},
	"enterprise": {Name: "enterprise", MaxFiles: 500, MaxFlex: 100,
		FlexRate: rate.Per(50, time.Second), FlexBurst: 500,
		URLRate: rate.Per(3000, time.Second), URLBurst: 3000},
}

// PlanByName returns the preset for name (case-insensitive).
func PlanByName(name string) (Plan, error) {
	p, ok := Plans[strings.ToLower(strings.TrimSpace(name))]
	if !ok {
		return Plan{}, fmt.Errorf("unknown plan %q: want free, pro, business or enterprise", name)
	}
	return p, nil
}

// Cap is the most items of kind k one request may carry.
func (p Plan) Cap(k Kind) int {
	switch k {
	case Files:
		return p.MaxFiles
	case Everything:
		return 1
	}
	return p.MaxFlex
}
