package main

import (
	"testing"
	"time"
)

func TestBusiest(t *testing.T) {
	at := func(ms ...int) []time.Time {
		base := time.Unix(0, 0)
		out := make([]time.Time, len(ms))
		for i, m := range ms {
			out[i] = base.Add(time.Duration(m) * time.Millisecond)
		}
		return out
	}
	for _, c := range []struct {
		times []time.Time
		want  int
	}{
		{nil, 0},
		{at(0), 1},
		{at(0, 999, 1000, 1001), 3}, // a window is shorter than its length: 0 and 1000 are not together
		{at(0, 10, 20, 2000, 2001), 3},
	} {
		if got := busiest(c.times, time.Second); got != c.want {
			t.Errorf("busiest(%v) = %d, want %d", c.times, got, c.want)
		}
	}
}
