package web

import (
	"bytes"
	"cmp"
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/purgeq/purgeq/batching"
	"github.com/purgeq/purgeq/limits"
	"github.com/purgeq/purgeq/limits/rate"
	"github.com/purgeq/purgeq/purge"
)

// StatusPath is where the status page is served: what the asynq UI cannot
// show (items wait in the outbox, not in asynq; the limits; the history).
const StatusPath = "/status"

// StatusSource is what the status page reads. Every field is required.
type StatusSource struct {
	Outbox interface {
		LaneStats(ctx context.Context) ([]batching.LaneStat, error)
	}
	Dead interface {
		Count(ctx context.Context) (int64, error)
	}
	History interface {
		Recent(ctx context.Context, n int) ([]batching.Entry, error)
	}
	// Find answers the history search: batching.History.Find with the
	// deployment's zones.
	Find    func(ctx context.Context, item, zone string) ([]batching.Entry, error)
	CallLog interface {
		PerMinute(ctx context.Context, account string, since time.Time, n int) ([]int, error)
	}
	// Accounts lists the Cloudflare accounts, each with its limits.
	Accounts func() []StatusAccount
	// ZoneName names a zone id and its account ("" for a zone not
	// configured, e.g. one removed while its items still wait).
	ZoneName func(zoneID string) (name, account string)
}

// StatusAccount is one Cloudflare account as the status page shows it.
type StatusAccount struct {
	Name string
	// Limits reads its limits (a *limits.Limiter).
	Limits interface {
		State(ctx context.Context) (limits.State, error)
	}
	// Config gives the totals beside what remains.
	Config limits.Config
}

// Bounds that keep the page short and its reads small.
const (
	statusZones  = 50  // zones listed, deepest first
	statusRecent = 20  // last calls listed
	statusFound  = 100 // search results listed
	statusRead   = 5 * time.Second
	chartMinutes = 60
)

//go:embed status.html
var statusFiles embed.FS

var statusTmpl = template.Must(template.New("status.html").Funcs(template.FuncMap{
	"count": count,
	"wait":  wait,
	"clock": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") },
}).ParseFS(statusFiles, "status.html"))

type statusPage struct {
	Now       time.Time
	UIPath    string
	Errors    []string
	Waiting   int64
	ZoneCount int
	Zones     []zoneRow
	MoreZones int
	Accounts  []accountView
	Dead      string // the count, or "unavailable"
	Recent    []entryRow
	Item      string
	Zone      string
	Searched  bool
	Invalid   []string // why the search cannot be answered
	Found     []entryRow
	MoreFound int
}

type zoneRow struct {
	Account, Zone string
	Depth         int64
	Wait          time.Duration
	Kinds         string
}

type accountView struct {
	Name   string
	Limits []limitRow
	Chart  chart
}

type limitRow struct {
	Name, Remaining, Of string
	Cooldown            time.Time
	CooldownLeft        time.Duration
}

type entryRow struct {
	batching.Entry
	ZoneName string
	Requests string
}

// chart is the SVG bar chart of calls per minute over the last hour.
type chart struct {
	Bars  []bar
	Max   int
	Total int
	Last5 int
	// Limit is the global limit's average a minute ("": none), drawn at
	// LimitY when it is on the scale.
	Limit   string
	OnScale bool
	LimitY  float64
	Width   int
	Base    int // the bars' baseline; labels below it
	Height  int
	Ticks   []tick
}

type tick struct {
	X, Y          int
	Label, Anchor string
}

type bar struct {
	X, Y, H float64
	Title   string
}

// statusHandler serves the status page; its reads run at once, each once.
func statusHandler(s *StatusSource) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), statusRead)
		defer cancel()
		p := read(ctx, s, strings.TrimSpace(r.FormValue("item")), strings.TrimSpace(r.FormValue("zone")))
		var b bytes.Buffer
		if err := statusTmpl.Execute(&b, p); err != nil {
			http.Error(w, "rendering the status page: "+err.Error(), http.StatusInternalServerError)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Cache-Control", "no-store")
		// No scripts, nothing from elsewhere; forms only to this page.
		h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
		if len(p.Errors) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		w.Write(b.Bytes())
	})
}

// read gathers the page's data, every read in parallel.
func read(ctx context.Context, s *StatusSource, item, zone string) *statusPage {
	now := time.Now()
	p := &statusPage{Now: now, UIPath: UIPath + "/", Item: item, Zone: zone, Searched: item != ""}
	var mu sync.Mutex
	fail := func(what string, err error) {
		mu.Lock()
		defer mu.Unlock()
		p.Errors = append(p.Errors, what+": "+err.Error())
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		lanes, err := s.Outbox.LaneStats(ctx)
		if err != nil {
			fail("outbox", err)
			return
		}
		p.zones(lanes, now, s.ZoneName)
	})
	wg.Go(func() {
		n, err := s.Dead.Count(ctx)
		if err != nil {
			p.Dead = "unavailable"
			fail("dead letters", err)
			return
		}
		p.Dead = count(n)
	})
	wg.Go(func() {
		es, err := s.History.Recent(ctx, statusRecent)
		if err != nil {
			fail("last calls", err)
		}
		for _, e := range es {
			name, _ := s.ZoneName(e.Zone)
			p.Recent = append(p.Recent, row(e, name))
		}
	})
	if item != "" {
		wg.Go(func() {
			es, err := s.Find(ctx, item, zone)
			var inv *purge.InvalidError
			if errors.As(err, &inv) {
				for _, it := range inv.Items {
					p.Invalid = append(p.Invalid, it.Item+": "+it.Reason)
				}
				return
			}
			if err != nil {
				fail("history search", err)
			}
			for i, e := range es {
				if i == statusFound {
					p.MoreFound = len(es) - i
					break
				}
				p.Found = append(p.Found, row(e, e.Zone))
			}
		})
	}
	accounts := s.Accounts()
	p.Accounts = make([]accountView, len(accounts))
	since := now.Truncate(time.Minute).Add(-(chartMinutes - 1) * time.Minute)
	for i, a := range accounts {
		p.Accounts[i].Name = a.Name
		wg.Go(func() {
			st, err := a.Limits.State(ctx)
			if err != nil {
				fail("limits of account "+a.Name, err)
				return
			}
			p.Accounts[i].Limits = limitRows(st, a.Config, now)
		})
		wg.Go(func() {
			calls, err := s.CallLog.PerMinute(ctx, a.Name, since, chartMinutes)
			if err != nil {
				fail("calls of account "+a.Name, err)
				return
			}
			p.Accounts[i].Chart = newChart(calls, since, a.Config.Global)
		})
	}
	wg.Wait()
	slices.Sort(p.Errors)
	return p
}

// zones sums the lanes per zone and keeps the deepest statusZones.
func (p *statusPage) zones(lanes []batching.LaneStat, now time.Time, zoneName func(string) (string, string)) {
	byZone := map[string]*zoneRow{}
	kinds := map[string]map[purge.Kind]int64{}
	for _, l := range lanes {
		if l.Depth == 0 {
			continue
		}
		z := byZone[l.Lane.Zone]
		if z == nil {
			name, account := zoneName(l.Lane.Zone)
			if name == "" {
				name = l.Lane.Zone
			}
			z = &zoneRow{Account: account, Zone: name}
			byZone[l.Lane.Zone] = z
			kinds[l.Lane.Zone] = map[purge.Kind]int64{}
		}
		z.Depth += l.Depth
		if !l.Oldest.IsZero() {
			z.Wait = max(z.Wait, now.Sub(l.Oldest))
		}
		kinds[l.Lane.Zone][l.Lane.Kind] += l.Depth
		p.Waiting += l.Depth
	}
	for id, z := range byZone {
		var parts []string
		for _, k := range purge.Kinds {
			if n := kinds[id][k]; n > 0 {
				parts = append(parts, string(k)+" "+count(n))
			}
		}
		z.Kinds = strings.Join(parts, " · ")
		p.Zones = append(p.Zones, *z)
	}
	slices.SortFunc(p.Zones, func(a, b zoneRow) int {
		return cmp.Or(cmp.Compare(b.Depth, a.Depth), strings.Compare(a.Zone, b.Zone))
	})
	p.ZoneCount = len(p.Zones)
	if len(p.Zones) > statusZones {
		p.MoreZones = len(p.Zones) - statusZones
		p.Zones = p.Zones[:statusZones]
	}
}

func limitRows(st limits.State, c limits.Config, now time.Time) []limitRow {
	rows := []limitRow{
		{Name: "global window", Remaining: count(int64(st.GlobalRemaining)), Of: c.Global.String()},
		{Name: "tag, host, prefix, everything bucket", Remaining: count(int64(st.FlexTokens)), Of: bucket(c.Flex)},
		{Name: "URL bucket (URLs)", Remaining: count(int64(st.URLTokens)), Of: bucket(c.URL)},
	}
	for i, scope := range []purge.Scope{purge.ScopeGlobal, purge.ScopeFlex, purge.ScopeURL} {
		if end, ok := st.Cooldowns[scope]; ok && end.After(now) {
			rows[i].Cooldown, rows[i].CooldownLeft = end, end.Sub(now)
		}
	}
	return rows
}

func bucket(b limits.Bucket) string {
	if b.Burst == 0 {
		return ""
	}
	return count(int64(b.Burst)) + ", refilled " + b.Rate.String()
}

func row(e batching.Entry, zoneName string) entryRow {
	if zoneName == "" {
		zoneName = e.Zone
	}
	var rs []string
	for _, r := range e.Requests {
		s := r.ID
		if who := strings.TrimSpace(r.Producer + " " + r.Source); who != "" {
			s += " (" + who + ")"
		}
		rs = append(rs, s)
	}
	return entryRow{Entry: e, ZoneName: zoneName, Requests: strings.Join(rs, ", ")}
}

// Chart geometry: bars of 10 px with a gap of 2 (60 bars: 720 px), up
// to 120 px high.
const (
	chartBar    = 12
	chartHeight = 120
)

func newChart(calls []int, since time.Time, global rate.Rate) chart {
	c := chart{Width: chartBar * len(calls), Base: chartHeight, Height: chartHeight + 18}
	for i, n := range calls {
		c.Total += n
		if i >= len(calls)-5 {
			c.Last5 += n
		}
		c.Max = max(c.Max, n)
	}
	// Scaled to the busiest minute, so that a quiet hour keeps its shape;
	// the limit's line joins once the busiest minute reaches half of it.
	top := float64(max(c.Max, 1))
	if !global.IsZero() {
		per := global.PerSecond() * 60
		c.Limit = strconv.FormatFloat(per, 'f', 1, 64)
		c.Limit = strings.TrimSuffix(c.Limit, ".0")
		if c.OnScale = per <= 2*top; c.OnScale {
			top = max(top, per)
			c.LimitY = chartHeight * (1 - per/top)
		}
	}
	for i, label := range []string{"−60 min", "−45 min", "−30 min", "−15 min", "now"} {
		c.Ticks = append(c.Ticks, tick{X: c.Width * i / 4, Y: c.Height - 3, Label: label, Anchor: [...]string{"start", "middle", "middle", "middle", "end"}[i]})
	}
	for i, n := range calls {
		h := chartHeight * float64(n) / top
		if n > 0 {
			h = max(h, 1) // one call stays visible
		}
		at := since.Add(time.Duration(i) * time.Minute).UTC()
		c.Bars = append(c.Bars, bar{X: float64(i * chartBar), Y: chartHeight - h, H: h,
			Title: fmt.Sprintf("%s UTC: %d calls", at.Format("15:04"), n)})
	}
	return c
}

// count writes a count (not negative) with thousands separators: 12,345.
func count(n int64) string {
	s := strconv.FormatInt(n, 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// wait writes a duration for people: whole seconds, or milliseconds below one.
func wait(d time.Duration) string {
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}
