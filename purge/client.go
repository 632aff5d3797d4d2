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
// queue's job, and it needs every outcome classified, not hidden.
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
		http:      &http.Client{Timeout: cfg.Timeout, Transport: cfg.Transport},
	}, nil
}

// Accepted is a successful call: Cloudflare accepted the purge (eviction
// follows within seconds). ID is Cloudflare's result id, for the audit trail.
type Accepted struct {
	ID string
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
		return Accepted{}, &Error{Class: Transient, Status: resp.StatusCode, Err: fmt.Errorf("reading response: %w", err)}
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

// Envelope is Cloudflare's response shape.
type Envelope struct {
	Success  bool       `json:"success"`
	Errors   []APIError `json:"errors"`
	Messages []APIError `json:"messages"`
	Result   *Result    `json:"result"`
}

// APIError is one entry of an envelope's errors or messages.
type APIError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// Result is a purge's result: the id Cloudflare assigned.
type Result struct {
	ID string `json:"id"`
}

// WriteJSON answers an HTTP request with v as JSON, without HTML escaping,
// the way Cloudflare's API answers (used by the simulator and the intake).
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
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
	e := &Error{Status: status, Code: first.Code, Message: first.Message}

	switch {
	case status == http.StatusTooManyRequests:
		e.Class = RateLimited
		e.RetryAfter = retryAfter(h)
		e.Scope = ScopeGlobal // a 429 that says nothing is treated as the worst case
		if first.Code == CodeRateLimitPurge {
			e.Scope = BucketScope(b.Kind)
		}
		return Accepted{}, e
	case status >= 500:
		e.Class = Transient
		return Accepted{}, e
	case jsonErr != nil:
		e.Class = Transient
		e.Err = fmt.Errorf("unreadable response body (%d bytes): %w", len(body), jsonErr)
		return Accepted{}, e
	case status >= 200 && status < 300 && env.Success:
		if env.Result == nil {
			return Accepted{}, nil
		}
		return Accepted{ID: env.Result.ID}, nil
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

// namedItems returns the batch items that Cloudflare's error messages name
// ("Unable to purge https://…", "tag … too long").
func namedItems(errs []APIError, b Batch) []string {
	var out []string
	for _, key := range b.Items {
		needle := key
		if b.Kind == Files {
			needle = ItemURL(key)
		}
		for _, e := range errs {
			if strings.Contains(strings.ToLower(e.Message), strings.ToLower(needle)) {
				out = append(out, key)
				break
			}
		}
	}
	return out
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
	for _, part := range strings.Split(h.Get("Ratelimit"), ";") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(part), "t="); ok {
			if secs, err := strconv.ParseFloat(v, 64); err == nil && secs >= 0 {
				return time.Duration(secs * float64(time.Second))
			}
		}
	}
	return 0
}
