// Package cftest runs a Cloudflare purge API simulator on a loopback port, in
// the manner of net/http/httptest: the code under test uses its real HTTP
// client against it.
//
// It serves POST and DELETE /client/v4/zones/{id}/purge_cache and
// POST /client/v4/zones/{id}/invalidate_cache with Cloudflare's bodies,
// envelopes and error codes, and GET /client/v4/zones (the token's zones, a
// page at a time). It simulates one account or several (Config.Accounts),
// each with its own token, zones, caps and flex (requests) and URL (URLs)
// token buckets; checks that the bearer token owns the zone (else 403, code
// 10000, as Cloudflare answers); enforces the per-request caps, the item
// rules and the global sliding window per token with its block (accounts
// that share a token share it; Spend plays another client of the token);
// sends Ratelimit, Ratelimit-Policy and Retry-After headers; injects faults
// on demand (5xx, hangs, connection resets, malformed bodies, forced 429s,
// poison items that always fail with 1015); and records every purge call,
// with its account, for assertions.
//
// Every duration is configuration so that tests can scale time down. The
// same server runs standalone as cmd/cfsim and inside `worker --dev`, and it
// answers GET /__sim/stats and GET /__sim/calls for out-of-process checks.
package cftest

import (
	"cmp"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/purgeq/purgeq/limits/rate"
	"github.com/purgeq/purgeq/purge"
)

// Config describes the simulated accounts. Token, Zones and ZoneNames
// describe the account named DefaultAccount; it exists when Token is set or
// no Accounts are.
type Config struct {
	// Token is the default account's API token, accepted as a bearer token.
	Token string
	// Zones are the default account's zone ids; GET /zones lists each under
	// its id as name.
	Zones []string
	// ZoneNames are the default account's zones by name (name → id), for
	// GET /zones; an id may be in Zones as well.
	ZoneNames map[string]string
	// Accounts are further accounts, each with its own token, zones and
	// purge buckets.
	Accounts []Account
	// Plan gives the caps and purge buckets of the default account, and of
	// every account whose Plan leaves them zero. Zero means the free plan.
	Plan purge.Plan
	// GlobalLimit is the window of each token. Zero means 1200/5m.
	GlobalLimit rate.Rate
	// Block is how long every call of a token is refused after it exceeds
	// the window (or a forced global 429). Zero means 5m.
	Block time.Duration
	// Latency delays every answer, as a network and API would.
	Latency time.Duration
	// HangFor is how long a hang fault holds a request. Zero means until
	// the client gives up or the server closes.
	HangFor time.Duration
	// OnCall, if set, sees every call once it is answered.
	OnCall func(Call)
}

// Faults are probabilities (0–1) of each fault per call, drawn after the
// token, zone and global-window checks.
type Faults struct {
	Error5xx  float64
	Hang      float64
	Reset     float64
	Malformed float64
}

// Call is the record of one purge request.
type Call struct {
	At     time.Time   `json:"at"`
	Zone   string      `json:"zone"`
	Kind   purge.Kind  `json:"kind,omitempty"`
	Soft   bool        `json:"soft,omitempty"`
	Items  []string    `json:"items,omitempty"`
	Status int         `json:"status"`
	Code   int         `json:"code,omitempty"`
	Fault  string      `json:"fault,omitempty"`
	Scope  purge.Scope `json:"scope,omitempty"`
	// DuringBlock is set for a call that arrived while its token was blocked.
	DuringBlock bool `json:"during_block,omitempty"`
	// ResultID is the purge id an accepted call was answered with.
	ResultID string `json:"result_id,omitempty"`
	// Account is the name of the account that owns Zone ("" for an unknown
	// zone), whichever token the call carried.
	Account string `json:"account,omitempty"`
}

// Accepted reports whether Cloudflare would have purged the call's items.
func (c Call) Accepted() bool { return c.Status == http.StatusOK && c.Fault == "" }

// Stats summarises the calls so far. The global-window figures (Global429,
// Exceeded, DuringBlock, MaxInWindow) cover every token and zone listings as
// well as purges.
type Stats struct {
	// Calls counts purge calls that passed the token check.
	Calls    int `json:"calls"`
	Accepted int `json:"accepted"`
	// Items is the number of items in accepted calls.
	Items int `json:"items"`
	// Global429 counts 429s of the global window (971), forced ones
	// included; Bucket429 those of the purge buckets (1134).
	Global429 int `json:"global_429"`
	Bucket429 int `json:"bucket_429"`
	// Exceeded counts calls that overflowed the global window by
	// themselves (not forced): a client that respects the limit causes none.
	Exceeded int `json:"exceeded"`
	// DuringBlock counts calls that arrived while their token was blocked.
	DuringBlock int `json:"during_block"`
	// MaxInWindow is the most calls counted by the global window in any
	// interval of the window's length.
	MaxInWindow int `json:"max_in_window"`
	// Faults counts injected faults.
	Faults int `json:"faults"`
	// ZoneLists counts GET /zones calls that passed the token check.
	ZoneLists int `json:"zone_lists"`
	// Spent counts the window slots that Spend took.
	Spent int `json:"spent"`
}

// Server is a running simulator.
type Server struct {
	// URL is the API base, like https://api.cloudflare.com/client/v4.
	URL string

	cfg     Config
	ts      *httptest.Server
	closing chan struct{}

	// Set up by NewUnstartedServer, then only read.
	accounts []*account
	owner    map[string]*account    // zone id → the account that owns it
	listed   map[string][]zoneEntry // token → its zones by name, for GET /zones
	windows  map[string]*window     // token → its global window

	mu     sync.Mutex // guards the windows, the accounts' buckets and what follows
	calls  []Call
	faults Faults
	rng    *mrand.Rand
	forced []purge.Scope
	poison map[string]poison
	stats  Stats
}

// NewServer starts a simulator on a loopback port. Close it when done.
func NewServer(cfg Config) *Server {
	s := NewUnstartedServer(cfg)
	s.Start()
	return s
}

// NewUnstartedServer returns a simulator that Start or StartOn will serve.
func NewUnstartedServer(cfg Config) *Server {
	if cfg.Plan.MaxFiles == 0 {
		cfg.Plan = purge.Plans["free"]
	}
	if cfg.GlobalLimit.IsZero() {
		cfg.GlobalLimit = rate.Per(1200, 5*time.Minute)
	}
	if cfg.Block == 0 {
		cfg.Block = 5 * time.Minute
	}
	s := &Server{
		cfg:     cfg,
		closing: make(chan struct{}),
		owner:   make(map[string]*account),
		listed:  make(map[string][]zoneEntry),
		windows: make(map[string]*window),
		poison:  make(map[string]poison),
		rng:     mrand.New(mrand.NewPCG(1, 2)),
	}
	now := time.Now()
	if cfg.Token != "" || len(cfg.Accounts) == 0 {
		zones := make(map[string]string) // id → name
		for _, id := range cfg.Zones {
			zones[id] = id
		}
		for name, id := range cfg.ZoneNames {
			zones[id] = name
		}
		s.addAccount(DefaultAccount, cfg.Token, zones, cfg.Plan, now)
	}
	for _, a := range cfg.Accounts {
		zones := make(map[string]string, len(a.Zones))
		for name, id := range a.Zones {
			if _, dup := zones[id]; dup {
				panic(fmt.Sprintf("cftest: account %q lists zone id %s twice", a.Name, id))
			}
			zones[id] = name
		}
		s.addAccount(a.Name, a.Token, zones, a.Plan, now)
	}
	for _, zones := range s.listed {
		sortZones(zones)
	}
	s.ts = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	return s
}

// Start serves on a free loopback port.
func (s *Server) Start() {
	s.ts.Start()
	s.URL = s.ts.URL + "/client/v4"
}

// StartOn serves on addr (standalone use).
func (s *Server) StartOn(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	s.ts.Listener.Close()
	s.ts.Listener = l
	s.Start()
	return nil
}

// Close stops the server, releasing hung requests, and waits for the rest.
func (s *Server) Close() {
	close(s.closing)
	s.ts.Close()
}

// SetFaults replaces the fault probabilities; seed makes the draws repeatable.
func (s *Server) SetFaults(f Faults, seed uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = f
	s.rng = mrand.New(mrand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

// Force429 makes the next n purge calls answer 429 for scope. A forced
// global 429 also starts the block of the call's token, as a real one does.
func (s *Server) Force429(scope purge.Scope, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.forced = append(s.forced, scope)
	}
}

// poison is how a poisoned item fails.
type poison int

const (
	poisonNamed poison = iota + 1 // 1015 "Unable to purge <item>", one error per item
	poisonQuiet                   // 1016 "Unable to purge any urls", naming none
)

// Poison makes calls that carry any of keys fail with 400 and one 1015
// "Unable to purge <item>" error per such item, for as long as the server runs.
func (s *Server) Poison(keys ...string) { s.setPoison(poisonNamed, keys) }

// PoisonQuietly makes calls that carry any of keys fail with 1016, naming
// no item, so that a client must bisect to find them.
func (s *Server) PoisonQuietly(keys ...string) { s.setPoison(poisonQuiet, keys) }

// ClearPoison makes every poisoned item purgeable again.
func (s *Server) ClearPoison() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.poison)
}

func (s *Server) setPoison(p poison, keys []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range keys {
		s.poison[k] = p
	}
}

// Calls returns a copy of every call so far.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Call(nil), s.calls...)
}

// Stats returns the summary so far.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	for _, w := range s.windows {
		st.MaxInWindow = max(st.MaxInWindow, maxInWindow(w.arrivals, s.cfg.GlobalLimit.Per))
	}
	return st
}

// BlockedUntil is when the latest block of any token ends (zero if none
// began).
func (s *Server) BlockedUntil() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	var until time.Time
	for _, w := range s.windows {
		if w.blockUntil.After(until) {
			until = w.blockUntil
		}
	}
	return until
}

// maxInWindow slides a window of length w over sorted times.
func maxInWindow(ts []time.Time, w time.Duration) int {
	best, lo := 0, 0
	for hi := range ts {
		for ts[hi].Sub(ts[lo]) >= w {
			lo++
		}
		best = max(best, hi-lo+1)
	}
	return best
}

// bucket is a token bucket refilled continuously.
type bucket struct {
	rate   rate.Rate
	burst  float64
	tokens float64
	at     time.Time
}

// take removes n tokens if it can, else says how long until it could.
func (b *bucket) take(now time.Time, n float64) (bool, time.Duration) {
	b.tokens = math.Min(b.burst, b.tokens+now.Sub(b.at).Seconds()*b.rate.PerSecond())
	b.at = now
	if b.tokens >= n {
		b.tokens -= n
		return true, 0
	}
	return false, time.Duration((n - b.tokens) / b.rate.PerSecond() * float64(time.Second))
}

// answer is what serve decided; it is written after the latency.
type answer struct {
	status     int
	code       int
	message    string
	errors     []purge.APIError // several errors; else code and message
	retryAfter time.Duration
	fault      string
	resultID   string // the purge id of an accepted call
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/__sim/stats":
		purge.WriteJSON(w, http.StatusOK, s.Stats())
		return
	case "/__sim/calls":
		purge.WriteJSON(w, http.StatusOK, s.Calls())
		return
	case "/client/v4/zones":
		s.serveZones(w, r)
		return
	}
	token, _ := bearer(r)
	call := Call{At: time.Now()}
	a, batch := s.decide(r, token, &call)
	call.Status, call.Code, call.Fault = a.status, a.code, a.fault
	if a.status == http.StatusOK && a.fault == "" {
		a.resultID = newID()
		call.ResultID = a.resultID
	}
	call.Kind, call.Soft, call.Items = batch.Kind, batch.Soft, batch.Items
	s.mu.Lock()
	s.calls = append(s.calls, call)
	s.mu.Unlock()
	if s.cfg.OnCall != nil {
		s.cfg.OnCall(call)
	}

	s.delay()
	switch a.fault {
	case "hang":
		var timeout <-chan time.Time
		if s.cfg.HangFor > 0 {
			timeout = time.After(s.cfg.HangFor)
		}
		select {
		case <-r.Context().Done():
		case <-s.closing:
		case <-timeout:
		}
		return
	case "reset":
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				if tc, ok := conn.(*net.TCPConn); ok {
					tc.SetLinger(0) // RST, not FIN
				}
				conn.Close()
				return
			}
		}
	case "malformed":
		s.setRateHeaders(w.Header(), token)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		w.Write([]byte(`{"success":true,"errors":[],"result":{"id":"`))
		return
	}
	s.writeAnswer(w, token, a)
}

// delay holds an answer for the configured latency.
func (s *Server) delay() {
	if s.cfg.Latency > 0 {
		select {
		case <-time.After(s.cfg.Latency):
		case <-s.closing:
		}
	}
}

// decide runs every check in Cloudflare's order and records the outcome in
// the stats; it returns the answer and the decoded batch.
func (s *Server) decide(r *http.Request, token string, call *Call) (answer, purge.Batch) {
	zone, endpoint, ok := parsePath(r.URL.Path)
	call.Zone = zone
	if !ok || !(r.Method == http.MethodPost || r.Method == http.MethodDelete && endpoint == "purge_cache") {
		return answer{status: http.StatusNotFound, code: purge.CodeNoRouteMethod, message: "No route for that URI"}, purge.Batch{}
	}
	owner := s.owner[zone]
	if owner != nil {
		call.Account = owner.name
	}
	win := s.windows[token]
	if win == nil || owner != nil && owner.token != token { // an unknown token, or another account's zone
		return answer{status: http.StatusForbidden, code: purge.CodeAuth, message: "Authentication error"}, purge.Batch{}
	}
	batch, decodeErr := decodeBody(r)
	batch.Soft = endpoint == "invalidate_cache"

	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.Calls++
	now := time.Now()
	if a, blocked := s.blocked(win, now); blocked {
		call.DuringBlock = true
		return a, batch
	}
	if owner == nil {
		return answer{status: http.StatusNotFound, code: purge.CodeNoRoute, message: "Could not route to /zones/" + zone + "/" + endpoint + ", perhaps your object identifier is invalid?"}, batch
	}
	if a, ok := s.admit(win, now); !ok {
		return a, batch
	}

	if len(s.forced) > 0 {
		scope := s.forced[0]
		s.forced = s.forced[1:]
		s.stats.Faults++
		call.Scope = scope
		if scope == purge.ScopeGlobal {
			s.stats.Global429++
			win.blockUntil = now.Add(s.cfg.Block)
			return globalLimited(s.cfg.Block), batch
		}
		s.stats.Bucket429++
		return purgeLimited(time.Second), batch
	}
	if fault := s.drawFault(); fault != "" {
		s.stats.Faults++
		if fault == "5xx" {
			return answer{status: http.StatusBadGateway, fault: fault}, batch
		}
		return answer{fault: fault}, batch
	}
	if decodeErr != nil {
		return *decodeErr, batch
	}
	if a, ok := checkItems(owner.plan, batch); !ok {
		return a, batch
	}
	b, need := &owner.flex, 1.0
	if batch.Kind == purge.Files {
		b, need = &owner.urls, float64(len(batch.Items))
	}
	if ok, wait := b.take(now, need); !ok {
		s.stats.Bucket429++
		call.Scope = purge.BucketScope(batch.Kind)
		return purgeLimited(wait), batch
	}
	var named []purge.APIError
	for _, key := range batch.Items {
		switch s.poison[key] {
		case poisonNamed:
			name := key
			if batch.Kind == purge.Files {
				name = purge.ItemURL(key)
			}
			named = append(named, purge.APIError{Code: purge.CodeUnableToPurge, Message: "Unable to purge " + name})
		case poisonQuiet:
			return answer{status: http.StatusBadRequest, code: purge.CodeUnableToPurgeAny, message: "Unable to purge any urls"}, batch
		}
	}
	if len(named) > 0 {
		return answer{status: http.StatusBadRequest, code: named[0].Code, message: named[0].Message, errors: named}, batch
	}
	s.stats.Accepted++
	s.stats.Items += len(batch.Items)
	return answer{status: http.StatusOK}, batch
}

func (s *Server) drawFault() string {
	f := s.faults
	if f == (Faults{}) {
		return ""
	}
	x := s.rng.Float64()
	for _, c := range []struct {
		p    float64
		name string
	}{{f.Error5xx, "5xx"}, {f.Hang, "hang"}, {f.Reset, "reset"}, {f.Malformed, "malformed"}} {
		if x < c.p {
			return c.name
		}
		x -= c.p
	}
	return ""
}

func globalLimited(wait time.Duration) answer {
	return answer{status: http.StatusTooManyRequests, code: purge.CodeRateLimitGlobal,
		message: "Please wait and consider throttling your request speed", retryAfter: wait}
}

func purgeLimited(wait time.Duration) answer {
	return answer{status: http.StatusTooManyRequests, code: purge.CodeRateLimitPurge,
		message: "Unable to purge, rate limit reached. Please wait and consider throttling your request speed", retryAfter: wait}
}

// setRateHeaders describes token's global window as Cloudflare does:
// Ratelimit "default";r=<slots left>;t=<seconds until the oldest counted
// call leaves the window> and Ratelimit-Policy "default";q=<limit>;w=<window
// seconds>. An unknown token is shown an empty window.
func (s *Server) setRateHeaders(h http.Header, token string) {
	s.mu.Lock()
	now := time.Now()
	inWindow, reset := 0, time.Duration(0)
	if win := s.windows[token]; win != nil {
		inWindow = win.count(now, s.cfg.GlobalLimit.Per)
		if inWindow > 0 {
			reset = win.arrivals[len(win.arrivals)-inWindow].Add(s.cfg.GlobalLimit.Per).Sub(now)
		}
	}
	s.mu.Unlock()
	h.Set("Ratelimit", fmt.Sprintf(`"default";r=%d;t=%d`, max(0, s.cfg.GlobalLimit.N-inWindow), ceilSeconds(reset)))
	h.Set("Ratelimit-Policy", fmt.Sprintf(`"default";q=%d;w=%d`, s.cfg.GlobalLimit.N, ceilSeconds(s.cfg.GlobalLimit.Per)))
}

func (s *Server) writeAnswer(w http.ResponseWriter, token string, a answer) {
	s.setRateHeaders(w.Header(), token)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	if a.status == http.StatusTooManyRequests {
		h.Set("Retry-After", strconv.Itoa(ceilSeconds(a.retryAfter)))
	}
	env := purge.Envelope{Success: a.status == http.StatusOK, Errors: []purge.APIError{}, Messages: []purge.APIError{}}
	if env.Success {
		env.Result = &purge.Result{ID: a.resultID}
	} else if a.errors != nil {
		env.Errors = a.errors
	} else {
		env.Errors = append(env.Errors, purge.APIError{Code: a.code, Message: a.message})
	}
	purge.WriteJSON(w, a.status, env)
}

func ceilSeconds(d time.Duration) int { return int(math.Ceil(d.Seconds())) }

func newID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// parsePath splits /client/v4/zones/{id}/{purge_cache|invalidate_cache}.
func parsePath(p string) (zone, endpoint string, ok bool) {
	rest, found := strings.CutPrefix(p, "/client/v4/zones/")
	if !found {
		return "", "", false
	}
	zone, endpoint, found = strings.Cut(rest, "/")
	if !found || (endpoint != "purge_cache" && endpoint != "invalidate_cache") {
		return zone, endpoint, false
	}
	return zone, endpoint, true
}

// sortZones orders a token's zones as GET /zones lists them: by name.
func sortZones(zones []zoneEntry) {
	slices.SortFunc(zones, func(a, b zoneEntry) int { return cmp.Or(strings.Compare(a.Name, b.Name), strings.Compare(a.ID, b.ID)) })
}
