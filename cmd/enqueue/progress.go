package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/mattn/go-isatty"

	"github.com/purgeq/purgeq/batching"
	"github.com/purgeq/purgeq/limits"
)

// quietEvery is how often, at most, a log (no terminal) gets a progress
// line that only a cooldown's countdown changed.
const quietEvery = 10 * time.Second

// progress shows --wait's progress: a bar redrawn in place on a terminal;
// otherwise a plain line when the purged or dead-lettered count changes, and
// at most every quietEvery when only the rest (a cooldown) does, so that a
// long cooldown does not flood a CI log.
type progress struct {
	w        io.Writer
	terminal bool
	start    time.Time
	// now is the clock (time.Now; tests drive their own).
	now func() time.Time
	// last is the last line printed, counts its counts, printed when.
	last    string
	counts  [3]int
	printed time.Time
	// cooldown reports the cooldowns in force (nil when unknown).
	cooldown func() map[string]time.Duration
}

func newProgress(cooldown func() map[string]time.Duration, w io.Writer) *progress {
	p := &progress{w: w, start: time.Now(), now: time.Now, cooldown: cooldown}
	if f, ok := w.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
		p.terminal = true
	}
	return p
}

// cooldowns reads the cooldowns in force on the workers' token (nil when
// no worker published it).
func (c *conn) cooldowns(ctx context.Context) func() map[string]time.Duration {
	scope, err := limits.PublishedToken(ctx, c.rdb)
	if err != nil || scope == "" {
		return nil
	}
	return func() map[string]time.Duration {
		cd, err := limits.Cooldowns(ctx, c.rdb, scope)
		if err != nil {
			return nil
		}
		out := map[string]time.Duration{}
		for s, d := range cd {
			out[string(s)] = d
		}
		return out
	}
}

// show draws the status.
func (p *progress) show(st batching.Status) {
	done := st.Purged + st.Superseded
	line := fmt.Sprintf("%d/%d purged", done, st.Total)
	if st.Dead > 0 {
		line += fmt.Sprintf(", %d dead-lettered", st.Dead)
	}
	if p.cooldown != nil {
		cd := p.cooldown()
		scopes := make([]string, 0, len(cd))
		for s := range cd {
			scopes = append(scopes, s)
		}
		sort.Strings(scopes)
		for _, s := range scopes {
			line += fmt.Sprintf(", %s cooldown %s", s, cd[s].Round(time.Second))
		}
	}
	now := time.Now()
	if p.now != nil {
		now = p.now()
	}
	if !p.terminal {
		counts := [3]int{done, st.Dead, st.Total}
		if p.last == "" || counts != p.counts || (line != p.last && now.Sub(p.printed) >= quietEvery) {
			fmt.Fprintln(p.w, "enqueue:", line)
			p.last, p.counts, p.printed = line, counts, now
		}
		return
	}
	const width = 30
	filled := 0
	if st.Total > 0 {
		filled = width * (done + st.Dead) / st.Total
	}
	rate := float64(done) / max(now.Sub(p.start).Seconds(), 0.001)
	fmt.Fprintf(p.w, "\r\033[K[%s%s] %s · %.0f/s", strings.Repeat("#", filled), strings.Repeat("-", width-filled), line, rate)
}

// end finishes the bar's line.
func (p *progress) end() {
	if p.terminal {
		fmt.Fprintln(p.w)
	}
}
