package main

import (
	"fmt"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// timelineBin is the resolution of a run's timeline (real time).
const timelineBin = 10 * time.Second

// cloudflareLimit is Cloudflare's global limit: calls per 5 minutes.
const cloudflareLimit = 1200

// chart draws, for each strategy, the calls that reached the API so far
// against the most Cloudflare's global limit lets through by then (1,200
// at once, 1,200 more every 5 minutes): where a line crosses the limit,
// calls were refused.
func chart(path, workload string, rs []result) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("%s: API calls so far", workload)
	p.X.Label.Text = "minute"
	p.Y.Label.Text = "calls (cumulative)"
	minute := func(bin int) float64 { return float64(bin) * timelineBin.Minutes() }
	longest := 1
	var lines []any
	for _, r := range rs {
		pts := plotter.XYs{{X: 0, Y: 0}}
		total := 0
		for i, n := range r.Timeline {
			total += n
			pts = append(pts, plotter.XY{X: minute(i + 1), Y: float64(total)})
		}
		longest = max(longest, len(r.Timeline))
		lines = append(lines, r.Strategy, pts)
	}
	var limit plotter.XYs
	for bin := 0; bin <= longest; bin++ {
		windows := int(minute(bin)/5) + 1
		limit = append(limit, plotter.XY{X: minute(bin), Y: float64(windows * cloudflareLimit)})
	}
	lines = append(lines, "Cloudflare's limit (1,200 per 5 min)", limit)
	if err := plotutil.AddLinePoints(p, lines...); err != nil {
		return err
	}
	p.Legend.Top, p.Legend.Left = true, true
	return p.Save(10*vg.Inch, 5*vg.Inch, path)
}
