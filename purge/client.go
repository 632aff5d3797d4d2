package purge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Batch is one API call's worth of items: one kind, at most the plan's cap.
type Batch struct {
	Kind Kind
	// Items are canonical keys from Normalize or NormalizeFile.
	Items []string
	// Soft asks for invalidate_cache (mark stale) instead of purge_cache.
	Soft bool
}

// Body encodes the batch as Cloudflare's request body, without HTML escaping.
func (b Batch) Body() ([]byte, error) {
	var v any
	switch b.Kind {
	case Everything:
		v = struct {
			PurgeEverything bool `json:"purge_everything"`
		}{true}
	case Files:
		files := make([]json.RawMessage, len(b.Items))
		for i, key := range b.Items {
			if strings.HasPrefix(key, "{") {
				files[i] = json.RawMessage(key)
				continue
			}
			s, err := encodeJSON(key)
			if err != nil {
				return nil, err
			}
			files[i] = json.RawMessage(s)
		}
		v = map[string][]json.RawMessage{"files": files}
	case Tags, Hosts, Prefixes:
		v = map[string][]string{string(b.Kind): b.Items}
	default:
		return nil, fmt.Errorf("purge: unknown kind %q", b.Kind)
	}
	s, err := encodeJSON(v)
	return []byte(s), err
}

// Endpoint is the API path's last element: purge_cache, or invalidate_cache
// for a soft purge.
func (b Batch) Endpoint() string {
	if b.Soft {
		return "invalidate_cache"
	}
	return "purge_cache"
}

// ClientConfig configures a Client.
type ClientConfig struct {
	// BaseURL is the API base, e.g. https://api.cloudflare.com/client/v4.
	BaseURL string
	// Token is the API token (Cache Purge permission). It is sent as a
	// bearer token and appears nowhere else: not in errors, not in logs.
	Token string
	// Timeout bounds one call, response included. Zero means 30s.
	Timeout time.Duration
	// UserAgent is sent with every call. Empty means "purgeq".
	UserAgent string
	// Transport overrides http.DefaultTransport (tests).
	Transport http.RoundTripper
}

// Client calls Cloudflare's purge endpoints. It never retries: that is the
// queue's job, and it needs every outcome classified, not hidden. Nor does
// it follow redirects: a 3xx is Misconfigured, and the token goes to the
// base URL's host only.
type Client struct {
	base      string
	auth      string
	userAgent string
	http      *http.Client
}

// NewClient checks cfg and returns a Client.
func NewClient(cfg ClientConfig) (*Client, error) {
	if !strings.HasPrefix(cfg.BaseURL, "http://") && !strings.HasPrefix(cfg.BaseURL, "https://") {
		return nil, fmt.Errorf("purge: base URL %q must start with http:// or https://", cfg.BaseURL)
	}
	if cfg.Token == "" {
		return nil, errors.New("purge: an API token is required")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = "purgeq"
	}
	return &Client{
		base:      strings.TrimSuffix(cfg.BaseURL, "/"),
		auth:      "Bearer " + cfg.Token,
		userAgent: cfg.UserAgent,
		// No redirect is followed: the token would go along to wherever it
		// points, and a purge is never redirected by Cloudflare; a 3xx is
		// an outcome (Classify: Misconfigured).
		http: &http.Client{Timeout: cfg.Timeout, Transport: cfg.Transport,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
	}, nil
}

// Accepted is a successful call: Cloudflare accepted the purge (eviction
// follows within seconds). ID is Cloudflare's result id, for the audit trail.
type Accepted struct {
	ID string
	// Rate is what the answer's Ratelimit header said of the token's global
	// window; nil when it had none.
	Rate *RateInfo
}

// maxResponse bounds how much of a response is read.
const maxResponse = 1 << 20

// Purge sends one batch for zoneID. Any failure is a *Error.
func (c *Client) Purge(ctx context.Context, zoneID string, b Batch) (Accepted, error) {
	body, err := b.Body()
	if err != nil {
		return Accepted{}, &Error{Class: Permanent, Message: err.Error()}
	}
	endpoint := c.base + "/zones/" + zoneID + "/" + b.Endpoint()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return Accepted{}, &Error{Class: Misconfigured, Message: "building request: " + err.Error()}
	}
	req.Header.Set("Authorization", c.auth)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", c.userAgent)
	resp, err := c.http.Do(req)
	if err != nil {
		return Accepted{}, &Error{Class: Transient, Err: stripURL(err)}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return Accepted{}, &Error{Class: Transient, Status: resp.StatusCode, Rate: rateOf(resp.Header), Err: fmt.Errorf("reading response: %w", err)}
	}
	return Classify(resp.StatusCode, resp.Header, data, b)
}

// stripURL drops the request URL from a transport error: it holds the zone
// id, which belongs in structured log fields, not in every message.
func stripURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s: %w", ue.Op, ue.Err)
	}
	return err
}

// Classify turns a response into an outcome. It is exported so that the
// classification table can be tested exhaustively without a server.
func Classify(status int, h http.Header, body []byte, b Batch) (Accepted, error) {
	var env Envelope
	jsonErr := json.Unmarshal(body, &env)
	first := APIError{}
	if len(env.Errors) > 0 {
		first = env.Errors[0]
	}
	e := &Error{Status: status, Code: first.Code, Message: first.Message, Rate: rateOf(h)}

	if status >= 200 && status < 300 && jsonErr == nil && env.Success {
		if env.Result == nil {
			return Accepted{Rate: e.Rate}, nil
		}
		return Accepted{ID: env.Result.ID, Rate: e.Rate}, nil
	}
	if status >= 300 && status < 400 {
		// Cloudflare's API never redirects a purge, and the client follows
		// no redirect (the token would go along): the base URL is wrong
		// (http:// answered by an upgrade to https://, a moved path, a
		// proxy's login page). Retrying meets the same redirect.
		e.Class = Misconfigured
		e.Code = 0
		e.Message = "the API answered with a redirect" + redirectTarget(h) + ", which is not followed: check PURGE_CLOUDFLARE_API_URL"
		return Accepted{}, e
	}
	if scope, limit := rateLimitScope(status, env.Errors, b.Kind); scope != "" {
		e.Class = RateLimited
		e.Scope = scope
		e.RetryAfter = retryAfter(h)
		if limit.Code != 0 {
			e.Code, e.Message = limit.Code, limit.Message
		}
		return Accepted{}, e
	}

	switch {
	case status >= 500:
		e.Class = Transient
		return Accepted{}, e
	case jsonErr != nil:
		e.Class = Transient
		e.Err = fmt.Errorf("unreadable response body (%d bytes): %w", len(body), jsonErr)
		return Accepted{}, e
	case status >= 200 && status < 300 && len(env.Errors) == 0:
		e.Class = Transient
		e.Err = errors.New("response neither succeeded nor named an error")
		return Accepted{}, e
	case status == http.StatusRequestTimeout:
		e.Class = Transient
		return Accepted{}, e
	}

	switch first.Code {
	case CodeAuth, CodeNoRoute, CodeNoRouteMethod:
		e.Class = Misconfigured
		return Accepted{}, e
	}
	if status == http.StatusUnauthorized || status == http.StatusForbidden {
		e.Class = Misconfigured
		return Accepted{}, e
	}
	e.Class = Permanent
	e.Items = namedItems(env.Errors, b)
	return Accepted{}, e
}

// redirectTarget names where a redirect pointed, scheme and host only
// (the path holds the zone id, which belongs in log fields), or "".
func redirectTarget(h http.Header) string {
	u, err := url.Parse(h.Get("Location"))
	if err != nil || u.Host == "" {
		return ""
	}
	if u.Scheme == "" {
		return " to " + u.Host
	}
	return " to " + u.Scheme + "://" + u.Host
}

// rateLimitScope says which limit a response hit, and the error that said
// so: a rate-limit code in any of the errors decides, whatever the HTTP
// status (the global limit wins over a purge bucket); a 429 without one is
// treated as the worst case, the global limit. "" means not rate limited.
func rateLimitScope(status int, errs []APIError, k Kind) (Scope, APIError) {
	var scope Scope
	var by APIError
	for _, e := range errs {
		switch e.Code {
		case CodeRateLimitGlobal, CodeRateLimitOld:
			return ScopeGlobal, e
		case CodeRateLimitPurge:
			if scope == "" {
				scope, by = BucketScope(k), e
			}
		}
	}
	if scope == "" && status == http.StatusTooManyRequests {
		scope = ScopeGlobal
	}
	return scope, by
}

// namedItems returns the batch items that Cloudflare's error messages name
// ("Unable to purge https://…", "Invalid host: …"), in batch order. A name
// is a whole whitespace-separated token of a message, taken as is or, when
// that names nothing, with surrounding quotes, brackets and trailing
// punctuation trimmed; it must equal the item exactly (see nameKey). The
// lead-in "Unable to purge" is not a name, and 1016 ("Unable to purge any
// urls") names nothing. No item named means the caller bisects the batch.
func namedItems(errs []APIError, b Batch) []string {
	byName := make(map[string][]string, len(b.Items))
	for _, key := range b.Items {
		name := key
		if b.Kind == Files {
			name = ItemURL(key)
		}
		name = nameKey(b.Kind, name)
		byName[name] = append(byName[name], key)
	}
	named := make(map[string]bool)
	for _, e := range errs {
		if e.Code == CodeUnableToPurgeAny {
			continue
		}
		words := strings.Fields(e.Message)
		if len(words) >= 3 && strings.EqualFold(strings.Join(words[:3], " "), "unable to purge") {
			words = words[3:]
		}
		for _, w := range words {
			keys, ok := byName[nameKey(b.Kind, w)]
			if !ok {
				trimmed := strings.TrimRight(strings.TrimLeft(w, `"'([<`), `"'.,;:)]>`)
				keys = byName[nameKey(b.Kind, trimmed)]
			}
			for _, key := range keys {
				named[key] = true
			}
		}
	}
	var out []string
	for _, key := range b.Items {
		if named[key] {
			out = append(out, key)
			delete(named, key) // a key listed twice in the batch is reported once
		}
	}
	return out
}

// nameKey is the form in which an item of kind k and a name from an error
// message are compared: tags and hosts case-insensitively; URLs and prefixes
// with scheme and host case-insensitive and everything after the host (path,
// query) byte for byte.
func nameKey(k Kind, s string) string {
	switch k {
	case Files, Prefixes:
		scheme, rest, hasScheme := strings.Cut(s, "://")
		if !hasScheme {
			scheme, rest = "", s
		}
		end := strings.IndexAny(rest, "/?#")
		if end < 0 {
			end = len(rest)
		}
		rest = strings.ToLower(rest[:end]) + rest[end:]
		if hasScheme {
			return strings.ToLower(scheme) + "://" + rest
		}
		return rest
	}
	return strings.ToLower(s)
}

// retryAfter reads Retry-After (seconds or an HTTP date), else the reset
// time of the Ratelimit header ("default";r=0;t=30), else zero.
func retryAfter(h http.Header) time.Duration {
	if v := strings.TrimSpace(h.Get("Retry-After")); v != "" {
		if secs, err := strconv.ParseFloat(v, 64); err == nil && secs >= 0 {
			return time.Duration(secs * float64(time.Second))
		}
		if t, err := http.ParseTime(v); err == nil {
			if d := time.Until(t); d > 0 {
				return d
			}
			return 0
		}
	}
	if ri, ok := ParseRatelimit(h); ok {
		return ri.Reset
	}
	return 0
}
