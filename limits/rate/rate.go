// Package rate holds Rate, the "N/DURATION" value used by every limit in the
// project's configuration (PURGE_GLOBAL_LIMIT=1200/5m, PURGE_FLEX_LIMIT=5/1m…).
// It is shared by purge (plan presets), limits (the Redis limiter) and the
// configuration loader, so that the format is parsed in exactly one place,
// and public so that programs outside this module can fill a purge.Plan, a
// limits.Config or a cftest.Config.
package rate

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Rate is N events per Per. The zero Rate means "no limit configured".
type Rate struct {
	N   int
	Per time.Duration
}

// Per returns the Rate n per d.
func Per(n int, d time.Duration) Rate { return Rate{N: n, Per: d} }

// Parse reads "N/DURATION", where DURATION is a Go duration ("1200/5m",
// "5/1m", "800/1s"). A bare unit ("5/s", "5/m") means one of that unit.
func Parse(s string) (Rate, error) {
	n, d, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		return Rate{}, fmt.Errorf("rate %q: want N/DURATION, e.g. 1200/5m", s)
	}
	count, err := strconv.Atoi(strings.TrimSpace(n))
	if err != nil || count <= 0 {
		return Rate{}, fmt.Errorf("rate %q: count %q is not a positive integer", s, n)
	}
	d = strings.TrimSpace(d)
	if d != "" && (d[0] < '0' || d[0] > '9') {
		d = "1" + d
	}
	per, err := time.ParseDuration(d)
	if err != nil || per <= 0 {
		return Rate{}, fmt.Errorf("rate %q: duration %q is not a positive Go duration", s, d)
	}
	return Rate{N: count, Per: per}, nil
}

// Decode lets envconfig parse a Rate.
func (r *Rate) Decode(s string) error {
	v, err := Parse(s)
	if err != nil {
		return err
	}
	*r = v
	return nil
}

// String formats the Rate as Parse reads it.
func (r Rate) String() string {
	if r.IsZero() {
		return ""
	}
	return strconv.Itoa(r.N) + "/" + formatDuration(r.Per)
}

// IsZero reports whether no rate is set.
func (r Rate) IsZero() bool { return r.N == 0 || r.Per == 0 }

// Interval is the time one event's worth of capacity takes to refill.
func (r Rate) Interval() time.Duration { return r.Per / time.Duration(r.N) }

// PerSecond is the rate in events per second.
func (r Rate) PerSecond() float64 { return float64(r.N) / r.Per.Seconds() }

// formatDuration trims the zero units time.Duration.String leaves ("5m0s" → "5m").
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
