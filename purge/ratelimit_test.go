package purge_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/purgeq/purgeq/purge"
)

func TestParseRatelimit(t *testing.T) {
	tests := []struct {
		name   string
		values []string // Ratelimit header lines
		want   purge.RateInfo
		ok     bool
	}{
		{"Cloudflare's form", []string{`"default";r=50;t=30`}, purge.RateInfo{50, 30 * time.Second}, true},
		{"exhausted", []string{`"default";r=0;t=7`}, purge.RateInfo{0, 7 * time.Second}, true},
		{"spaces", []string{`  "default" ; r = 12 ;  t = 3  `}, purge.RateInfo{12, 3 * time.Second}, true},
		{"bare name", []string{`default;r=5;t=1`}, purge.RateInfo{5, time.Second}, true},
		{"no name", []string{`r=5;t=1`}, purge.RateInfo{5, time.Second}, true},
		{"quoted values", []string{`"default";r="5";t="2"`}, purge.RateInfo{5, 2 * time.Second}, true},
		{"upper-case keys", []string{`"default";R=5;T=2`}, purge.RateInfo{5, 2 * time.Second}, true},
		{"unknown parameters", []string{`"default";q=100;r=9;pk=:abc=:;t=4;x="a;b,c"`}, purge.RateInfo{9, 4 * time.Second}, true},
		{"no t", []string{`"default";r=9`}, purge.RateInfo{9, 0}, true},
		{"fractional t", []string{`"default";r=9;t=1.5`}, purge.RateInfo{9, 1500 * time.Millisecond}, true},
		{"name with separators", []string{`"a;r=0,b";r=8;t=2`}, purge.RateInfo{8, 2 * time.Second}, true},
		{"smallest remaining of a list", []string{`"burst";r=40;t=1, "default";r=7;t=120, "day";r=900;t=3600`}, purge.RateInfo{7, 120 * time.Second}, true},
		{"tie takes the longer reset", []string{`"a";r=3;t=10,"b";r=3;t=60`}, purge.RateInfo{3, 60 * time.Second}, true},
		{"several header lines", []string{`"a";r=30;t=5`, `"b";r=2;t=9`}, purge.RateInfo{2, 9 * time.Second}, true},
		{"a malformed policy beside a good one", []string{`"a";r=oops;t=5, "b";r=4;t=6`}, purge.RateInfo{4, 6 * time.Second}, true},
		{"empty items are skipped", []string{`, ,"default";r=1;t=1,`}, purge.RateInfo{1, time.Second}, true},

		{"absent", nil, purge.RateInfo{}, false},
		{"empty", []string{``}, purge.RateInfo{}, false},
		{"no r", []string{`"default";t=30`}, purge.RateInfo{}, false},
		{"negative r", []string{`"default";r=-1;t=30`}, purge.RateInfo{}, false},
		{"r not a number", []string{`"default";r=lots;t=30`}, purge.RateInfo{}, false},
		{"fractional r", []string{`"default";r=1.5;t=30`}, purge.RateInfo{}, false},
		{"negative t", []string{`"default";r=5;t=-3`}, purge.RateInfo{}, false},
		{"t not a number", []string{`"default";r=5;t=soon`}, purge.RateInfo{}, false},
		{"t infinite", []string{`"default";r=5;t=Inf`}, purge.RateInfo{}, false},
		{"t beyond a duration", []string{`"default";r=5;t=1e300`}, purge.RateInfo{}, false},
		{"older draft form", []string{`limit=100, remaining=50, reset=30`}, purge.RateInfo{}, false},
		{"unterminated quote", []string{`"default;r=5;t=1`}, purge.RateInfo{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			for _, v := range tt.values {
				h.Add("Ratelimit", v)
			}
			got, ok := purge.ParseRatelimit(h)
			if got != tt.want || ok != tt.ok {
				t.Errorf("ParseRatelimit(%q) = %+v, %v; want %+v, %v", tt.values, got, ok, tt.want, tt.ok)
			}
		})
	}
}
