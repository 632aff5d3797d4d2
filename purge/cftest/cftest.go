// Package cftest runs a Cloudflare purge API simulator on a loopback port, in
// the manner of net/http/httptest: the code under test uses its real HTTP
// client against it.
//
// It serves POST and DELETE /client/v4/zones/{id}/purge_cache and
// POST /client/v4/zones/{id}/invalidate_cache with Cloudflare's bodies,
// envelopes and error codes; checks the bearer token and zone ids; enforces
// the per-request caps, the item rules, the global sliding window per token
// with its block, and the account's flex (requests) and URL (URLs) token
// buckets; sends Ratelimit and Retry-After headers; injects faults on demand
// (5xx, hangs, connection resets, malformed bodies, forced 429s, poison items
// that always fail with 1015); and records every call for assertions.
//
// Every duration is configuration so that tests can scale time down. The
// same server runs standalone as cmd/cfsim and inside `worker --dev`, and it
// answers GET /__sim/stats and GET /__sim/calls for out-of-process checks.
package cftest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/purgeq/purgeq/limits/rate"
	"github.com/purgeq/purgeq/purge"
)

// Config describes the simulated account.
type Config struct {
	// Token is the API token accepted as a bearer token. Required.
	Token string
	// Zones are the zone ids that exist. Required.
	Zones []string
	// Plan gives the caps and purge buckets. Zero means the free plan.
	Plan purge.Plan
	// GlobalLimit is the per-token window. Zero means 1200/5m.
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

// Call is the record of one request.
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
}

// Accepted reports whether Cloudflare would have purged the call's items.
func (c Call) Accepted() bool { return c.Status == http.StatusOK && c.Fault == "" }

// Stats summarises the calls so far.
type Stats struct {
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
}

// Server is a running simulator.
type Server struct {
	// URL is the API base, like https://api.cloudflare.com/client/v4.
	URL string

	cfg     Config
	ts      *httptest.Server
	closing chan struct{}

	mu         sync.Mutex
	zones      map[string]bool
	calls      []Call
	arrivals   []time.Time // calls the global window counted
	blockUntil time.Time
	flex, urls bucket
	faults     Faults
	rng        *mrand.Rand
	forced     []purge.Scope
	poison     map[string]poison
	stats      Stats
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
		zones:   make(map[string]bool),
		poison:  make(map[string]poison),
		rng:     mrand.New(mrand.NewPCG(1, 2)),
	}
	for _, z := range cfg.Zones {
		s.zones[z] = true
	}
	now := time.Now()
	s.flex = bucket{rate: cfg.Plan.FlexRate, burst: float64(cfg.Plan.FlexBurst), tokens: float64(cfg.Plan.FlexBurst), at: now}
	s.urls = bucket{rate: cfg.Plan.URLRate, burst: float64(cfg.Plan.URLBurst), tokens: float64(cfg.Plan.URLBurst), at: now}
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

// Force429 makes the next n calls answer 429 for scope. A forced global 429
// also starts the block, as a real one does.
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
	st.MaxInWindow = maxInWindow(s.arrivals, s.cfg.GlobalLimit.Per)
	return st
}

// BlockedUntil is when the current block ends (zero if none began).
func (s *Server) BlockedUntil() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.blockUntil
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
	}
	call := Call{At: time.Now()}
	a, batch := s.decide(r, &call)
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

	if s.cfg.Latency > 0 {
		select {
		case <-time.After(s.cfg.Latency):
		case <-s.closing:
		}
	}
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
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		w.Write([]byte(`{"success":true,"errors":[],"result":{"id":"`))
		return
	}
	s.writeAnswer(w, a)
}

// decide runs every check in Cloudflare's order and records the outcome in
// the stats; it returns the answer and the decoded batch.
func (s *Server) decide(r *http.Request, call *Call) (answer, purge.Batch) {
	zone, endpoint, ok := parsePath(r.URL.Path)
	call.Zone = zone
	if !ok || !(r.Method == http.MethodPost || r.Method == http.MethodDelete && endpoint == "purge_cache") {
		return answer{status: http.StatusNotFound, code: purge.CodeNoRouteMethod, message: "No route for that URI"}, purge.Batch{}
	}
	if r.Header.Get("Authorization") != "Bearer "+s.cfg.Token {
		return answer{status: http.StatusForbidden, code: purge.CodeAuth, message: "Authentication error"}, purge.Batch{}
	}
	batch, decodeErr := decodeBody(r)
	batch.Soft = endpoint == "invalidate_cache"

	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.Calls++
	now := time.Now()
	if now.Before(s.blockUntil) {
		s.stats.DuringBlock++
		s.stats.Global429++
		call.DuringBlock = true
		return globalLimited(s.blockUntil.Sub(now)), batch
	}
	if !s.zones[zone] {
		return answer{status: http.StatusNotFound, code: purge.CodeNoRoute, message: "Could not route to /zones/" + zone + "/" + endpoint + ", perhaps your object identifier is invalid?"}, batch
	}
	if s.countInWindow(now) >= s.cfg.GlobalLimit.N {
		s.stats.Exceeded++
		s.stats.Global429++
		s.blockUntil = now.Add(s.cfg.Block)
		return globalLimited(s.cfg.Block), batch
	}
	s.arrivals = append(s.arrivals, now)

	if len(s.forced) > 0 {
		scope := s.forced[0]
		s.forced = s.forced[1:]
		s.stats.Faults++
		call.Scope = scope
		if scope == purge.ScopeGlobal {
			s.stats.Global429++
			s.blockUntil = now.Add(s.cfg.Block)
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
	if a, ok := s.checkItems(batch); !ok {
		return a, batch
	}
	b, need := &s.flex, 1.0
	if batch.Kind == purge.Files {
		b, need = &s.urls, float64(len(batch.Items))
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

// countInWindow counts the arrivals in (now-window, now].
func (s *Server) countInWindow(now time.Time) int {
	start := now.Add(-s.cfg.GlobalLimit.Per)
	lo, hi := 0, len(s.arrivals)
	for lo < hi { // first arrival after start
		mid := (lo + hi) / 2
		if s.arrivals[mid].After(start) {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return len(s.arrivals) - lo
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

func (s *Server) writeAnswer(w http.ResponseWriter, a answer) {
	s.mu.Lock()
	now := time.Now()
	inWindow := s.countInWindow(now)
	remaining := max(0, s.cfg.GlobalLimit.N-inWindow)
	reset := time.Duration(0)
	if inWindow > 0 { // the oldest counted arrival leaves the window then
		reset = s.arrivals[len(s.arrivals)-inWindow].Add(s.cfg.GlobalLimit.Per).Sub(now)
	}
	s.mu.Unlock()
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Ratelimit", fmt.Sprintf(`"default";r=%d;t=%d`, remaining, ceilSeconds(reset)))
	h.Set("Ratelimit-Policy", fmt.Sprintf(`"burst";q=%d;w=%d`, s.cfg.GlobalLimit.N, ceilSeconds(s.cfg.GlobalLimit.Per)))
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
