package web

import (
	"testing"
	"time"

	"github.com/purgeq/purgeq/limits/rate"
)

// TestChartScale: bars are scaled to the busiest minute; the global
// limit's average a minute is drawn once the busiest minute reaches half
// of it, and then sets the scale if it is above.
func TestChartScale(t *testing.T) {
	since := time.Date(2030, 1, 2, 10, 0, 0, 0, time.UTC)
	calls := make([]int, 60)
	calls[0], calls[58], calls[59] = 1, 40, 100

	c := newChart(calls, since, rate.Per(1000, 5*time.Minute)) // 200 a minute
	if !c.OnScale || c.Limit != "200" || c.LimitY != 0 {
		t.Errorf("busiest minute 100 of 200: on scale %v, limit %q at y %v; want the line at the top", c.OnScale, c.Limit, c.LimitY)
	}
	if b := c.Bars[59]; b.H != chartHeight/2 || b.Y != chartHeight/2 || b.X != 59*chartBar || b.Title != "10:59 UTC: 100 calls" {
		t.Errorf("last bar %+v: want half the height at x %d", b, 59*chartBar)
	}
	if c.Bars[0].H != 1 || c.Bars[1].H != 0 {
		t.Errorf("one call %v, none %v: want 1 px and nothing", c.Bars[0].H, c.Bars[1].H)
	}
	if c.Total != 141 || c.Last5 != 140 || c.Max != 100 {
		t.Errorf("total %d, last 5 minutes %d, busiest %d; want 141, 140, 100", c.Total, c.Last5, c.Max)
	}

	c = newChart(calls, since, rate.Per(1200, 1*time.Minute))
	if c.OnScale || c.Limit != "1200" || c.Bars[59].H != chartHeight {
		t.Errorf("busiest minute 100 of 1200: on scale %v, last bar %v; want the bars scaled to 100 and no line", c.OnScale, c.Bars[59].H)
	}
	if c = newChart(calls, since, rate.Rate{}); c.Limit != "" || c.OnScale {
		t.Errorf("no global limit: %q", c.Limit)
	}
}
