package cftest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/purgeq/purgeq/purge"
)

// DefaultAccount names the account that Config.Token and Config.Zones
// describe.
const DefaultAccount = "default"

// Account is one simulated Cloudflare account: the token that may use it,
// its zones and its own purge buckets, shared by all of its zones.
type Account struct {
	// Name is the account's name: GET /zones shows it and every Call on
	// one of its zones records it.
	Name string
	// Token is the API token that may purge and list the account's zones.
	// Accounts that share a token share its global window.
	Token string
	// Zones are the account's zones, name → id. A zone id belongs to one
	// account only.
	Zones map[string]string
	// Plan gives the account's caps and purge buckets (flex in calls, URLs
	// in URLs); a zero field takes the Config's.
	Plan purge.Plan
}

// account is an Account being served: its buckets hold state, guarded by
// Server.mu.
type account struct {
	name, id, token string
	plan            purge.Plan
	flex, urls      bucket
}

// window is one API token's global window: the calls it counted and the
// block an overflow started. Guarded by Server.mu.
type window struct {
	arrivals   []time.Time
	blockUntil time.Time
}

// count counts the arrivals in (now-per, now].
func (w *window) count(now time.Time, per time.Duration) int {
	start := now.Add(-per)
	return len(w.arrivals) - sort.Search(len(w.arrivals), func(i int) bool { return w.arrivals[i].After(start) })
}

// addAccount serves one account; zones maps zone id → name. It panics on a
// configuration that Cloudflare could not have: a nameless, tokenless or
// repeated account, or a zone id of two accounts.
func (s *Server) addAccount(name, token string, zones map[string]string, plan purge.Plan, now time.Time) {
	if name == "" || token == "" {
		panic(fmt.Sprintf("cftest: account %q needs a name and a token", name))
	}
	for _, a := range s.accounts {
		if a.name == name {
			panic(fmt.Sprintf("cftest: two accounts are named %q", name))
		}
	}
	plan = withDefaults(plan, s.cfg.Plan)
	sum := sha256.Sum256([]byte(name))
	a := &account{name: name, id: hex.EncodeToString(sum[:16]), token: token, plan: plan,
		flex: bucket{rate: plan.FlexRate, burst: float64(plan.FlexBurst), tokens: float64(plan.FlexBurst), at: now},
		urls: bucket{rate: plan.URLRate, burst: float64(plan.URLBurst), tokens: float64(plan.URLBurst), at: now}}
	s.accounts = append(s.accounts, a)
	if s.windows[token] == nil {
		s.windows[token] = &window{}
	}
	for id, zoneName := range zones {
		if other := s.owner[id]; other != nil {
			panic(fmt.Sprintf("cftest: zone id %s is in accounts %q and %q", id, other.name, name))
		}
		s.owner[id] = a
		s.listed[token] = append(s.listed[token], zoneEntry{ID: id, Name: zoneName, Status: "active",
			Account: accountRef{ID: a.id, Name: name}})
	}
}

// AddZone adds a zone to an account, as the dashboard would: GET /zones
// lists it from then on and purges of it are accepted. It panics for an
// unknown account or a zone id another account has.
func (s *Server) AddZone(account, name, id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range s.accounts {
		if a.name != account {
			continue
		}
		if other := s.owner[id]; other != nil {
			panic(fmt.Sprintf("cftest: zone id %s is in account %q already", id, other.name))
		}
		s.owner[id] = a
		s.listed[a.token] = append(s.listed[a.token], zoneEntry{ID: id, Name: name, Status: "active", Account: accountRef{ID: a.id, Name: a.name}})
		sortZones(s.listed[a.token])
		return
	}
	panic(fmt.Sprintf("cftest: no account %q", account))
}

// withDefaults fills p's zero fields from d.
func withDefaults(p, d purge.Plan) purge.Plan {
	if p.Name == "" {
		p.Name = d.Name
	}
	if p.MaxFiles == 0 {
		p.MaxFiles = d.MaxFiles
	}
	if p.MaxFlex == 0 {
		p.MaxFlex = d.MaxFlex
	}
	if p.FlexRate.IsZero() {
		p.FlexRate = d.FlexRate
	}
	if p.FlexBurst == 0 {
		p.FlexBurst = d.FlexBurst
	}
	if p.URLRate.IsZero() {
		p.URLRate = d.URLRate
	}
	if p.URLBurst == 0 {
		p.URLBurst = d.URLBurst
	}
	return p
}

// bearer returns the request's bearer token.
func bearer(r *http.Request) (string, bool) {
	return strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
}

// Spend takes up to n slots of token's global window now, as another client
// of the same token would (the dashboard, a script), and returns how many it
// took: it never overflows the window nor starts a block, and takes none
// while the token is blocked. It panics for a token that no account has.
func (s *Server) Spend(token string, n int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	win := s.windows[token]
	if win == nil {
		panic("cftest: Spend: no account has this token")
	}
	now := time.Now()
	if now.Before(win.blockUntil) {
		return 0
	}
	taken := max(0, min(n, s.cfg.GlobalLimit.N-win.count(now, s.cfg.GlobalLimit.Per)))
	for range taken {
		win.arrivals = append(win.arrivals, now)
	}
	s.stats.Spent += taken
	return taken
}

// blocked answers the 429 of a token in its block. Called with s.mu held.
func (s *Server) blocked(win *window, now time.Time) (answer, bool) {
	if !now.Before(win.blockUntil) {
		return answer{}, false
	}
	s.stats.DuringBlock++
	s.stats.Global429++
	return globalLimited(win.blockUntil.Sub(now)), true
}

// admit counts a call in its token's window or, when the window is full,
// starts the block and answers its 429. Called with s.mu held.
func (s *Server) admit(win *window, now time.Time) (answer, bool) {
	if win.count(now, s.cfg.GlobalLimit.Per) >= s.cfg.GlobalLimit.N {
		s.stats.Exceeded++
		s.stats.Global429++
		win.blockUntil = now.Add(s.cfg.Block)
		return globalLimited(s.cfg.Block), false
	}
	win.arrivals = append(win.arrivals, now)
	return answer{}, true
}
