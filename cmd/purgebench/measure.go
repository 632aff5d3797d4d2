package main

import (
	"math"
	"sort"
	"time"

	"github.com/purgeq/purgeq/purge"
)

// measure computes a run's figures from the simulator's record.
func measure(w workload, name string, start time.Time, b *bench, scale float64) result {
	real := func(d time.Duration) float64 { return d.Seconds() * scale }
	type key struct {
		zone string
		kind purge.Kind
		item string
	}
	// When each item was first requested.
	requested := map[key]time.Duration{}
	for _, e := range w.Events {
		for _, kv := range []struct {
			kind  purge.Kind
			items []string
		}{{purge.Files, e.URLs}, {purge.Tags, e.Tags}} {
			for _, it := range kv.items {
				k, _ := purge.Normalize(kv.kind, it)
				kk := key{zoneID(e.Zone), kv.kind, k}
				if _, seen := requested[kk]; !seen {
					requested[kk] = e.At
				}
			}
		}
	}
	perLane := map[[2]string]int{}
	for k := range requested {
		perLane[[2]string{k.zone, string(k.kind)}]++
	}
	r := result{Workload: w.Name, Strategy: name, Scale: scale, Requested: len(requested)}
	for lane, n := range perLane {
		r.LowerBound += int(math.Ceil(float64(n) / float64(b.plan.Cap(purge.Kind(lane[1])))))
	}
	st := b.sim.Stats()
	r.Calls, r.RateLimited = st.Calls, st.Global429+st.Bucket429
	r.Blocks = st.Exceeded
	r.BlockedSeconds = float64(st.Exceeded) * real(b.block)
	r.Ratio = float64(r.Calls) / float64(max(1, r.LowerBound))

	purgedAt := map[key]time.Duration{}
	var last time.Duration
	var accepted []time.Time
	for _, c := range b.sim.Calls() {
		at := c.At.Sub(start)
		bin := int(real(at) / timelineBin.Seconds())
		for len(r.Timeline) <= bin {
			r.Timeline = append(r.Timeline, 0)
		}
		r.Timeline[bin]++
		if !c.Accepted() {
			continue
		}
		accepted = append(accepted, c.At)
		for _, it := range c.Items {
			k := key{c.Zone, c.Kind, it}
			if _, ok := requested[k]; ok {
				if _, done := purgedAt[k]; !done {
					purgedAt[k] = at
					last = max(last, at)
				}
			}
		}
	}
	sort.Slice(accepted, func(i, j int) bool { return accepted[i].Before(accepted[j]) })
	r.BusiestWindow = busiest(accepted, b.global.Per)
	r.WindowUse = float64(r.BusiestWindow) / configuredLimit
	r.Purged = len(purgedAt)
	r.LastPurgeSec = real(last)
	var lat []float64
	for k, at := range purgedAt {
		lat = append(lat, real(at-requested[k]))
	}
	sort.Float64s(lat)
	if len(lat) > 0 {
		r.P50Sec = lat[len(lat)/2]
		r.P99Sec = lat[int(math.Ceil(0.99*float64(len(lat))))-1]
	}
	return r
}

// busiest is the most of times (sorted) within any span shorter than d.
func busiest(times []time.Time, d time.Duration) int {
	most, j := 0, 0
	for i, t := range times {
		for times[j].Add(d).Before(t) || times[j].Add(d).Equal(t) {
			j++
		}
		most = max(most, i-j+1)
	}
	return most
}
