package main

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// event is one purge event a producer emits: URLs and tags of one zone.
type event struct {
	At   time.Duration // offset from the start
	Zone string        // zone name
	URLs []string
	Tags []string
}

// workload is a recorded sequence of events, replayed identically by every
// strategy.
type workload struct {
	Name   string
	Events []event
	// Scale is how much faster than real time the workload runs.
	Scale float64
}

var zoneNames = []string{"a.example", "b.example", "c.example"}

// defaultScales run each workload as fast as it can go without the time
// scaling itself changing the outcome: a burst compressed below the time
// the workers take to admit it is no longer one burst, so it runs in real
// time; the deploy, trickle and day are limited by Cloudflare's clock.
var defaultScales = map[string]float64{"cms-burst": 1, "deploy": 10, "trickle": 60, "mixed-day": 10}

// workloads builds the four workloads; size scales item counts (1 = the
// documented sizes, smaller for quick runs); scale, if not 0, replaces
// every workload's default time scale.
func workloads(size float64, scale float64) []workload {
	rng := rand.New(rand.NewPCG(7, 7))
	n := func(x int) int { return max(1, int(float64(x)*size)) }
	scaleOf := func(name string) float64 {
		if scale != 0 {
			return scale
		}
		return defaultScales[name]
	}
	var sec func(s float64) time.Duration
	start := func(name string) workload {
		s := scaleOf(name)
		sec = func(x float64) time.Duration { return time.Duration(x / s * float64(time.Second)) }
		return workload{Name: name, Scale: s}
	}

	// A CMS publishing burst: overlapping events of 1–20 URLs and 1–5 tags.
	burst := start("cms-burst")
	for i := range n(3000) {
		z := zoneNames[rng.IntN(3)]
		e := event{At: sec(float64(i) / float64(n(3000))), Zone: z} // all within one second
		for range 1 + rng.IntN(20) {
			e.URLs = append(e.URLs, fmt.Sprintf("https://www.%s/articles/%d", z, rng.IntN(n(8000))))
		}
		for range 1 + rng.IntN(5) {
			e.Tags = append(e.Tags, fmt.Sprintf("article-%d", rng.IntN(n(400))))
		}
		burst.Events = append(burst.Events, e)
	}

	// A deploy: 200,000 URLs at once.
	deploy := start("deploy")
	d := event{Zone: zoneNames[0]}
	for i := range n(200000) {
		d.URLs = append(d.URLs, fmt.Sprintf("https://www.a.example/static/%d/app.%x.js", i, i*2654435761))
	}
	deploy.Events = []event{d}

	// A steady trickle on a Free plan: a tag and a URL every 3 s for 10 min.
	trickle := start("trickle")
	for i := range 200 {
		z := zoneNames[i%3]
		trickle.Events = append(trickle.Events, event{At: sec(3 * float64(i)), Zone: z,
			URLs: []string{fmt.Sprintf("https://www.%s/page/%d", z, i)}, Tags: []string{fmt.Sprintf("page-%d", i)}})
	}

	// A mixed multi-zone day, compressed into 10 minutes: trickles,
	// bursts and one deploy.
	mixed := start("mixed-day")
	for range n(2000) {
		z := zoneNames[rng.IntN(3)]
		e := event{At: sec(600 * rng.Float64()), Zone: z}
		for range 1 + rng.IntN(5) {
			e.URLs = append(e.URLs, fmt.Sprintf("https://www.%s/m/%d", z, rng.IntN(n(20000))))
		}
		if rng.IntN(3) == 0 {
			e.Tags = append(e.Tags, fmt.Sprintf("section-%d", rng.IntN(50)))
		}
		mixed.Events = append(mixed.Events, e)
	}
	dep := event{At: sec(300), Zone: zoneNames[2]}
	for i := range n(20000) {
		dep.URLs = append(dep.URLs, fmt.Sprintf("https://www.c.example/build/%d.css", i))
	}
	mixed.Events = append(mixed.Events, dep)
	return []workload{burst, deploy, trickle, mixed}
}
