// Package intake is `enqueue serve`: the HTTP intake for CMS webhooks and
// other producers. POST /v1/purge queues a request and answers 202 once it
// is durably in Redis; GET /v1/purge/{id} reports progress; and the
// Cloudflare-compatible POST/DELETE /client/v4/zones/{zone}/purge_cache (and
// invalidate_cache) accept Cloudflare's own bodies and answer Cloudflare's
// own envelopes, so an existing Cloudflare client changes only its base URL.
package intake

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/purgeq/purgeq/batching"
	"github.com/purgeq/purgeq/internal/config"
	"github.com/purgeq/purgeq/limits"
	"github.com/purgeq/purgeq/limits/rate"
	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/tasks"
)

// Queue is what the intake needs of the queue.
type Queue interface {
	Build(tasks.PurgeRequest) (*tasks.Request, error)
	EnqueueBuilt(context.Context, *tasks.Request) (tasks.Receipt, error)
	Status(ctx context.Context, id string) (batching.Status, error)
}

// Windows bound each producer's items per window (limits.ProducerWindows).
type Windows interface {
	Take(ctx context.Context, producer string, n int, r rate.Rate) (bool, time.Duration, error)
}

// Options configure the intake.
type Options struct {
	Queue Queue
	// Producers are the callers and what each may do (config.Producers:
	// PURGE_CONFIG_FILE's and PURGE_INTAKE_TOKENS').
	Producers []config.Producer
	// Tokens are accepted bearer tokens with every right, as producers of
	// PURGE_INTAKE_TOKENS are (for programs that build Options by hand).
	Tokens []string
	// Windows keeps the producers' rates; nil: rates are not enforced.
	Windows Windows
	// History answers GET /v1/history (batching.History.Find); nil: 501.
	History func(ctx context.Context, item, zone string) ([]batching.Entry, error)
	// Streams starts streamed requests (POST /v1/purge/stream); nil: the
	// endpoint answers 501.
	Streams func(soft bool, idempotencyKey string) *tasks.Stream
	// Zones are the zones known now: the Cloudflare-compatible endpoint
	// accepts only their ids.
	Zones func() tasks.Zones
	// MaxBody bounds a request body; larger ones get 413.
	MaxBody int64
	Log     zerolog.Logger
}

type server struct {
	Options
	tokens    [][32]byte // tokens[i] is producers[i]'s, hashed
	producers []config.Producer
}

// Handler returns the intake's HTTP handler.
func Handler(o Options) http.Handler {
	if o.Zones == nil {
		o.Zones = func() tasks.Zones { return nil }
	}
	s := &server{Options: o}
	producers := slices.Clone(o.Producers)
	for i, t := range o.Tokens {
		producers = append(producers, config.TokenProducer(i+1, t))
	}
	for _, p := range producers {
		// config.Load refuses empty tokens; an empty one that got here
		// anyway must never match.
		if t := strings.TrimSpace(p.Token); t != "" {
			s.tokens = append(s.tokens, sha256.Sum256([]byte(t)))
			s.producers = append(s.producers, p)
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	mux.Handle("POST /v1/purge", s.auth(http.HandlerFunc(s.purge), writeError))
	mux.Handle("POST /v1/purge/stream", s.auth(http.HandlerFunc(s.stream), writeError))
	mux.Handle("GET /v1/history", s.auth(http.HandlerFunc(s.history), writeError))
	mux.Handle("GET /v1/purge/{id}", s.auth(http.HandlerFunc(s.status), writeError))
	cf := s.auth(http.HandlerFunc(s.cloudflare), writeCloudflareError)
	mux.Handle("POST /client/v4/zones/{zone}/purge_cache", cf)
	mux.Handle("DELETE /client/v4/zones/{zone}/purge_cache", cf)
	mux.Handle("POST /client/v4/zones/{zone}/invalidate_cache", cf)
	return s.accessLog(mux)
}

// auth accepts a bearer token (or, for old Cloudflare clients, X-Auth-Key)
// equal to one of the tokens, compared in constant time. The credential is
// trimmed first; one empty after trimming (say "Bearer \u00a0") never
// matches.
func (s *server) auth(next http.Handler, fail func(http.ResponseWriter, int, string, []purge.Invalid)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		given, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok {
			given = r.Header.Get("X-Auth-Key")
		}
		given = strings.TrimSpace(given)
		sum := sha256.Sum256([]byte(given))
		found := -1
		for i, t := range s.tokens {
			if subtle.ConstantTimeCompare(sum[:], t[:]) == 1 {
				found = i
			}
		}
		if given == "" || found < 0 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="purgeq"`)
			fail(w, http.StatusUnauthorized, "missing or unknown bearer token", nil)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), producerKey{}, s.producers[found])))
	})
}

// body is POST /v1/purge's request, a superset of Cloudflare's.
type body struct {
	Zone            string            `json:"zone"`
	Files           []json.RawMessage `json:"files"`
	Tags            []string          `json:"tags"`
	Hosts           []string          `json:"hosts"`
	Prefixes        []string          `json:"prefixes"`
	PurgeEverything *bool             `json:"purge_everything"`
	IdempotencyKey  string            `json:"idempotency_key"`
	Soft            bool              `json:"soft"`
	// Source says who or what asks (a CMS post, an editor), recorded with
	// the request.
	Source string `json:"source"`
	// Priority is high, normal or bulk (default: the producer's).
	Priority string `json:"priority"`
	// CallbackURL is POSTed the request's status once it ends; Delay and
	// RepeatAfter are Go durations (tasks.PurgeRequest).
	CallbackURL string `json:"callback_url"`
	Delay       string `json:"delay"`
	RepeatAfter string `json:"repeat_after"`
}

// decode reads a body within the size limit. The returned status is 413 for
// a body over the limit, 400 for anything unreadable.
func (s *server) decode(w http.ResponseWriter, r *http.Request) (*body, int, error) {
	return parseBody(http.MaxBytesReader(w, r.Body, s.MaxBody), s.MaxBody)
}

// parseBody reads one JSON object with no unknown fields and nothing after it.
func parseBody(r io.Reader, maxBody int64) (*body, int, error) {
	var b body
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("body over %d bytes: split the request", maxBody)
		}
		return nil, http.StatusBadRequest, fmt.Errorf("body is not a valid purge request: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, http.StatusBadRequest, errors.New("body has data after the JSON object")
	}
	return &b, 0, nil
}

// request turns a body into a producer request; files may be URL strings
// or {url, headers} objects.
func (b *body) request() (tasks.PurgeRequest, []purge.Invalid) {
	pr := tasks.PurgeRequest{Zone: b.Zone, Tags: b.Tags, Hosts: b.Hosts, Prefixes: b.Prefixes,
		IdempotencyKey: b.IdempotencyKey, Soft: b.Soft, Source: b.Source, Priority: b.Priority}
	var bad []purge.Invalid
	for _, raw := range b.Files {
		var f purge.File
		var u string
		switch {
		case json.Unmarshal(raw, &u) == nil:
			f.URL = u
		case json.Unmarshal(raw, &f) == nil && f.URL != "":
		default:
			bad = append(bad, purge.Invalid{Item: string(raw), Reason: "files items must be URL strings or {\"url\":…,\"headers\":{…}} objects"})
			continue
		}
		pr.Files = append(pr.Files, f)
	}
	// false (as in the documented example body) is the same as leaving it out.
	pr.Everything = b.everything()
	pr.CallbackURL = b.CallbackURL
	for _, f := range []struct {
		name, v string
		d       *time.Duration
	}{{"delay", b.Delay, &pr.Delay}, {"repeat_after", b.RepeatAfter, &pr.RepeatAfter}} {
		var err error
		if *f.d, err = duration(f.name, f.v); err != nil {
			bad = append(bad, purge.Invalid{Item: f.v, Reason: err.Error()})
		}
	}
	return pr, bad
}

// duration parses delay or repeat_after: a Go duration, empty for none.
func duration(name, v string) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%s %q is not a duration such as 30s or 5m", name, v)
	}
	return d, nil
}

// everything reports whether the body asks to purge everything.
func (b *body) everything() bool { return b.PurgeEverything != nil && *b.PurgeEverything }

// items counts the items a body names, as sent (before normalising and
// removing duplicates).
func (b *body) items() int {
	n := len(b.Files) + len(b.Tags) + len(b.Hosts) + len(b.Prefixes)
	if b.everything() {
		n++
	}
	return n
}

// headerKey is the request's Idempotency-Key header: empty when absent, an
// error when it is sent several times with different values.
func headerKey(r *http.Request) (string, error) {
	key := ""
	for _, v := range r.Header.Values("Idempotency-Key") {
		v = strings.TrimSpace(v)
		switch {
		case v == "":
		case key == "":
			key = v
		case v != key:
			return "", errors.New("the Idempotency-Key header is sent several times with different values: send one")
		}
	}
	return key, nil
}

// Headers of the Cloudflare-compatible endpoint for what its body cannot
// carry: a callback and deploy timing (body's CallbackURL, Delay,
// RepeatAfter).
const (
	headerCallback    = "X-Purgeq-Callback-Url"
	headerDelay       = "X-Purgeq-Delay"
	headerRepeatAfter = "X-Purgeq-Repeat-After"
)

// producerKey holds the authenticated producer in a request's context.
type producerKey struct{}

func producerOf(ctx context.Context) config.Producer {
	p, _ := ctx.Value(producerKey{}).(config.Producer)
	return p
}

// answer is a refusal with the status it takes.
type answer struct {
	status int
	err    error
}

// allowed checks what the producer may do: its zones, its kinds and
// purge-everything (403 naming what it may not), then its rate (429 with
// how long to wait).
func (s *server) allowed(ctx context.Context, p config.Producer, req *tasks.Request) (*answer, time.Duration) {
	if a := s.permitted(p, req); a != nil {
		return a, 0
	}
	return s.withinRate(ctx, p, req.Total())
}

// permitted checks the zones and kinds a producer may purge.
func (s *server) permitted(p config.Producer, req *tasks.Request) *answer {
	var denied []string
	for _, zone := range slices.Sorted(maps.Keys(req.Zones)) {
		if !p.MayZone(zone) {
			denied = append(denied, "zone "+s.zoneName(zone))
			continue
		}
		for _, k := range purge.Kinds {
			if len(req.Zones[zone][k]) > 0 && !p.MayKind(k) {
				what := "kind " + string(k)
				if k == purge.Everything {
					what = "purge everything"
				}
				denied = append(denied, what+" in "+s.zoneName(zone))
			}
		}
	}
	if len(denied) > 0 {
		return &answer{http.StatusForbidden, fmt.Errorf("producer %s may not purge: %s", p.Name, strings.Join(denied, ", "))}
	}
	return nil
}

// withinRate takes n items from the producer's rate.
func (s *server) withinRate(ctx context.Context, p config.Producer, n int) (*answer, time.Duration) {
	if p.Rate.IsZero() || s.Windows == nil {
		return nil, 0
	}
	ok, wait, err := s.Windows.Take(ctx, p.Name, n, p.Rate)
	switch {
	case errors.Is(err, limits.ErrLargerThanRate):
		return &answer{http.StatusTooManyRequests, fmt.Errorf("producer %s: %v: split the request", p.Name, err)}, p.Rate.Per
	case err != nil:
		s.Log.Error().Err(err).Msg("producer rate")
		return &answer{http.StatusServiceUnavailable, errors.New("the queue cannot take requests now (nothing was queued); retry later")}, 0
	case !ok:
		return &answer{http.StatusTooManyRequests, fmt.Errorf("producer %s is over its rate of %s items; nothing was queued", p.Name, p.Rate)}, wait
	}
	return nil, 0
}

// attribute records the producer on its request, and keeps its
// idempotency keys its own (those of PURGE_INTAKE_TOKENS stay shared with
// the CLI, as they were before named producers).
func attribute(ctx context.Context, pr *tasks.PurgeRequest) {
	p := producerOf(ctx)
	pr.Producer = p.Name
	if pr.Priority == "" {
		pr.Priority = p.Priority
	}
	if !p.Legacy && pr.IdempotencyKey != "" {
		pr.IdempotencyKey = p.Name + "\x00" + pr.IdempotencyKey
	}
	note(ctx, func(f *logFields) { f.producer = p.Name })
}

// retryAfter sets Retry-After for an answer the producer's rate refused.
func retryAfter(ctx context.Context, w http.ResponseWriter, status int) {
	if f, ok := ctx.Value(logFieldsKey{}).(*logFields); ok && status == http.StatusTooManyRequests && f.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(f.retryAfter.Seconds()))))
	}
}

// zoneName names a zone id for messages.
func (s *server) zoneName(id string) string {
	if z, ok := s.Zones().Lookup(id); ok && z.Name != "" {
		return z.Name
	}
	return id
}

// enqueue validates and queues: nothing is queued unless all of it is.
// Whatever the outcome, it notes for the access log the purge request's
// id (once built), its zones and its item count.
func (s *server) enqueue(ctx context.Context, pr tasks.PurgeRequest, bad []purge.Invalid) (tasks.Receipt, int, []purge.Invalid, error) {
	req, err := s.Queue.Build(pr)
	if req != nil {
		zones := make([]string, 0, len(req.Zones))
		for z := range req.Zones {
			zones = append(zones, z)
		}
		slices.Sort(zones)
		note(ctx, func(f *logFields) { f.request, f.zones, f.items = req.ID, zones, req.Total() })
	}
	var ie *purge.InvalidError
	switch {
	case errors.As(err, &ie):
		bad = append(bad, ie.Items...)
	case err != nil:
		return tasks.Receipt{}, http.StatusInternalServerError, nil, err
	}
	if len(bad) > 0 {
		return tasks.Receipt{}, http.StatusBadRequest, bad, fmt.Errorf("%d invalid item(s), nothing queued", len(bad))
	}
	if a, wait := s.allowed(ctx, producerOf(ctx), req); a != nil {
		if wait > 0 {
			note(ctx, func(f *logFields) { f.retryAfter = wait })
		}
		return tasks.Receipt{}, a.status, nil, a.err
	}
	rc, err := s.Queue.EnqueueBuilt(ctx, req)
	note(ctx, func(f *logFields) { f.duplicate = rc.Duplicate })
	if errors.Is(err, tasks.ErrNotReplicated) || errors.Is(err, tasks.ErrUncertain) {
		s.Log.Warn().Err(err).Msg("perhaps queued")
		return tasks.Receipt{}, http.StatusServiceUnavailable, nil, fmt.Errorf("%v; retry with the same Idempotency-Key to be sure", err)
	}
	if err != nil {
		s.Log.Error().Err(err).Msg("queueing failed")
		return tasks.Receipt{}, http.StatusServiceUnavailable, nil, errors.New("the queue cannot take requests now (nothing was queued); retry later")
	}
	return rc, http.StatusAccepted, nil, nil
}

func (s *server) purge(w http.ResponseWriter, r *http.Request) {
	b, status, err := s.decode(w, r)
	if err != nil {
		writeError(w, status, err.Error(), nil)
		return
	}
	noteBody(r.Context(), b)
	// The key may come in the body or, as the 503 answer says, in the
	// Idempotency-Key header; both is fine when they agree.
	hk, err := headerKey(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	if hk != "" && b.IdempotencyKey != "" && hk != b.IdempotencyKey {
		writeError(w, http.StatusBadRequest, "the Idempotency-Key header and the body's idempotency_key differ: send one, or the same in both", nil)
		return
	}
	if hk != "" {
		b.IdempotencyKey = hk
	}
	pr, bad := b.request()
	attribute(r.Context(), &pr)
	rc, status, bad, err := s.enqueue(r.Context(), pr, bad)
	if err != nil {
		retryAfter(r.Context(), w, status)
		writeError(w, status, err.Error(), bad)
		return
	}
	purge.WriteJSON(w, http.StatusAccepted, rc)
}

func (s *server) status(w http.ResponseWriter, r *http.Request) {
	note(r.Context(), func(f *logFields) { f.request = r.PathValue("id") })
	st, err := s.Queue.Status(r.Context(), r.PathValue("id"))
	switch {
	case errors.Is(err, batching.ErrUnknownRequest):
		writeError(w, http.StatusNotFound, "no request "+r.PathValue("id")+" (unknown, or finished longer ago than the retention)", nil)
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, "the queue cannot be read now", nil)
	default:
		purge.WriteJSON(w, http.StatusOK, st)
	}
}

// history answers when an item was purged, newest first.
func (s *server) history(w http.ResponseWriter, r *http.Request) {
	if s.History == nil {
		writeError(w, http.StatusNotImplemented, "the purge history is not served here", nil)
		return
	}
	item := r.URL.Query().Get("item")
	if item == "" {
		writeError(w, http.StatusBadRequest, "item is missing: GET /v1/history?item=…[&zone=…]", nil)
		return
	}
	entries, err := s.History(r.Context(), item, r.URL.Query().Get("zone"))
	var ie *purge.InvalidError
	switch {
	case errors.As(err, &ie):
		writeError(w, http.StatusBadRequest, "nothing to look up", ie.Items)
	case err != nil:
		s.Log.Error().Err(err).Msg("reading the history")
		writeError(w, http.StatusServiceUnavailable, "the history cannot be read now", nil)
	default:
		if entries == nil {
			entries = []batching.Entry{}
		}
		purge.WriteJSON(w, http.StatusOK, entries)
	}
}

// cloudflare serves Cloudflare's own purge endpoint shape.
func (s *server) cloudflare(w http.ResponseWriter, r *http.Request) {
	zone, ok := s.Zones().Lookup(r.PathValue("zone"))
	if !ok || zone.ID != r.PathValue("zone") {
		writeCloudflareErrors(w, http.StatusNotFound, []purge.APIError{{Code: purge.CodeNoRoute,
			Message: "Could not route to " + r.URL.Path + ", perhaps your object identifier is invalid?"}})
		return
	}
	note(r.Context(), func(f *logFields) { f.zones = []string{zone.ID} })
	b, status, err := s.decode(w, r)
	if err != nil {
		writeCloudflareError(w, status, err.Error(), nil)
		return
	}
	noteBody(r.Context(), b)
	// "purge_everything":false is the same as leaving it out.
	if b.everything() && (len(b.Files)+len(b.Tags)+len(b.Hosts)+len(b.Prefixes) > 0) {
		writeCloudflareErrors(w, http.StatusBadRequest, []purge.APIError{{Code: purge.CodeEverythingMixed, Message: "purge_everything must be the only field"}})
		return
	}
	if b.Zone != "" || b.IdempotencyKey != "" || b.Soft {
		writeCloudflareErrors(w, http.StatusBadRequest, []purge.APIError{{Code: purge.CodeMissingField, Message: "zone, idempotency_key and soft are not Cloudflare fields: use the path and invalidate_cache"}})
		return
	}
	if b.CallbackURL != "" || b.Delay != "" || b.RepeatAfter != "" {
		writeCloudflareErrors(w, http.StatusBadRequest, []purge.APIError{{Code: purge.CodeMissingField, Message: "callback_url, delay and repeat_after are not Cloudflare fields: send the headers " + headerCallback + ", " + headerDelay + " and " + headerRepeatAfter}})
		return
	}
	// a Cloudflare client adds headers more easily than body fields
	b.CallbackURL, b.Delay, b.RepeatAfter = r.Header.Get(headerCallback), r.Header.Get(headerDelay), r.Header.Get(headerRepeatAfter)
	b.Zone = zone.ID
	b.Soft = strings.HasSuffix(r.URL.Path, "/invalidate_cache")
	hk, err := headerKey(r)
	if err != nil {
		writeCloudflareError(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	b.IdempotencyKey = hk
	pr, bad := b.request()
	attribute(r.Context(), &pr)
	rc, status, bad, err := s.enqueue(r.Context(), pr, bad)
	if err != nil {
		retryAfter(r.Context(), w, status)
		writeCloudflareError(w, status, err.Error(), bad)
		return
	}
	purge.WriteJSON(w, http.StatusOK, purge.Envelope{Success: true, Errors: []purge.APIError{}, Messages: []purge.APIError{}, Result: &purge.Result{ID: rc.ID}})
}

// errorBody is the intake's own error shape.
type errorBody struct {
	Error   string          `json:"error"`
	Invalid []purge.Invalid `json:"invalid,omitempty"`
}

func writeError(w http.ResponseWriter, status int, msg string, bad []purge.Invalid) {
	purge.WriteJSON(w, status, errorBody{Error: msg, Invalid: bad})
}

// writeCloudflareError answers in Cloudflare's envelope, one error per bad item.
func writeCloudflareError(w http.ResponseWriter, status int, msg string, bad []purge.Invalid) {
	var errs []purge.APIError
	for _, it := range bad {
		errs = append(errs, purge.APIError{Code: purge.CodeUnableToPurge, Message: "Unable to purge " + it.Item + ": " + it.Reason})
	}
	if errs == nil {
		code := map[int]int{http.StatusUnauthorized: purge.CodeAuth, http.StatusBadRequest: purge.CodeMissingField}[status]
		errs = []purge.APIError{{Code: code, Message: msg}}
	}
	writeCloudflareErrors(w, status, errs)
}

func writeCloudflareErrors(w http.ResponseWriter, status int, errs []purge.APIError) {
	purge.WriteJSON(w, status, purge.Envelope{Success: false, Errors: errs, Messages: []purge.APIError{}})
}

// logFields is what a handler tells the access log about the purge request
// an HTTP request concerned.
type logFields struct {
	request    string        // the purge request's id
	zones      []string      // its zones: ids once built, else as named
	items      int           // its items (-1: none known)
	duplicate  bool          // an idempotency key seen before
	producer   string        // who asked
	retryAfter time.Duration // for a 429: how long to wait
}

type logFieldsKey struct{}

// note updates the access log's fields of the request ctx belongs to.
func note(ctx context.Context, set func(*logFields)) {
	if f, ok := ctx.Value(logFieldsKey{}).(*logFields); ok {
		set(f)
	}
}

// noteBody notes a decoded body: the zone it names and its item count,
// until the request built from it says better.
func noteBody(ctx context.Context, b *body) {
	note(ctx, func(f *logFields) {
		if b.Zone != "" {
			f.zones = []string{b.Zone}
		}
		f.items = b.items()
	})
}

// accessLog gives every request an id (X-Request-Id) and logs it once done,
// with the purge request's id ("request"), zones and item count when the
// handler noted them.
func (s *server) accessLog(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := r.Header.Get("X-Request-Id")
		if id == "" || len(id) > 64 {
			var b [8]byte
			rand.Read(b[:])
			id = hex.EncodeToString(b[:])
		}
		w.Header().Set("X-Request-Id", id)
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		f := &logFields{items: -1}
		next.ServeHTTP(rec, r.WithContext(context.WithValue(r.Context(), logFieldsKey{}, f)))
		ev := s.Log.Info().Str("http_request", id).Str("method", r.Method).Str("path", r.URL.Path).Int("status", rec.status)
		if f.request != "" {
			ev = ev.Str("request", f.request)
		}
		if len(f.zones) > 0 {
			ev = ev.Strs("zones", f.zones)
		}
		if f.items >= 0 {
			ev = ev.Int("items", f.items)
		}
		if f.duplicate {
			ev = ev.Bool("duplicate", true)
		}
		if f.producer != "" {
			ev = ev.Str("producer", f.producer)
		}
		ev.Int64("bytes_in", r.ContentLength).Dur("took", time.Since(start)).Str("remote", r.RemoteAddr).Msg("request")
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}
