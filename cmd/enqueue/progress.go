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

// progress shows --wait's progress: a bar redrawn in place on a terminal,
// a plain line per change otherwise.
type progress struct {
	w        io.Writer
	terminal bool
	start    time.Time
	last     string
	// cooldown reports the cooldowns in force (nil when unknown).
	cooldown func() map[string]time.Duration
}

func newProgress(ctx context.Context, c *conn, w io.Writer) *progress {
	p := &progress{w: w, start: time.Now()}
	if f, ok := w.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
		p.terminal = true
	}
	if scope, err := limits.PublishedToken(ctx, c.rdb); err == nil && scope != "" {
		p.cooldown = func() map[string]time.Duration {
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
	return p
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
	if !p.terminal {
		if line != p.last {
			fmt.Fprintln(p.w, "enqueue:", line)
			p.last = line
		}
		return
	}
	const width = 30
	filled := 0
	if st.Total > 0 {
		filled = width * (done + st.Dead) / st.Total
	}
	rate := float64(done) / max(time.Since(p.start).Seconds(), 0.001)
	fmt.Fprintf(p.w, "\r\033[K[%s%s] %s · %.0f/s", strings.Repeat("#", filled), strings.Repeat("-", width-filled), line, rate)
}

// end finishes the bar's line.
func (p *progress) end() {
	if p.terminal {
		fmt.Fprintln(p.w)
	}
}
