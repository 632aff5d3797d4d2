package main

import (
	"fmt"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// chart draws calls per minute over time for each strategy, against the
// global limit (per minute: the 5-minute limit ÷ 5).
func chart(path, workload string, rs []result, limitPer5m int) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("%s: API calls per minute", workload)
	p.X.Label.Text = "minute"
	p.Y.Label.Text = "calls"
	longest := 0
	var lines []any
	for _, r := range rs {
		pts := make(plotter.XYs, len(r.Timeline))
		for i, n := range r.Timeline {
			pts[i] = plotter.XY{X: float64(i), Y: float64(n)}
		}
		longest = max(longest, len(r.Timeline))
		lines = append(lines, r.Strategy, pts)
	}
	limit := plotter.XYs{{X: 0, Y: float64(limitPer5m) / 5}, {X: float64(max(1, longest-1)), Y: float64(limitPer5m) / 5}}
	lines = append(lines, "limit (1200/5 min ÷ 5)", limit)
	if err := plotutil.AddLines(p, lines...); err != nil {
		return err
	}
	return p.Save(10*vg.Inch, 5*vg.Inch, path)
}
