package callback

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/hibiken/asynq"
	"github.com/rs/zerolog"

	"github.com/purgeq/purgeq/batching"
)

// SignatureHeader carries a callback's signature: "sha256=" and the hex
// HMAC-SHA256 of the exact body with PURGE_CALLBACK_SECRET.
const SignatureHeader = "X-Purgeq-Signature"

// Sign is a body's SignatureHeader value.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Verify reports whether signature is body's, in constant time: what a
// receiver written in Go runs (then it checks Body.Timestamp is recent).
func Verify(secret, body []byte, signature string) bool {
	return hmac.Equal([]byte(Sign(secret, body)), []byte(signature))
}

// Body is what a callback POSTs: the request's status as GET
// /v1/purge/{id} answers it when the request ended, and when this attempt
// was sent (RFC 3339, inside the signed body: a receiver refuses an old
// one, so that a recorded delivery cannot be replayed later).
type Body struct {
	batching.Status
	Timestamp string `json:"timestamp"`
}

// Delivery is the payload of a purge:callback task. It holds no secret.
type Delivery struct {
	URL    string          `json:"url"`
	Status batching.Status `json:"status"`
	// EndedAt (Unix ms) is when the request ended: deliveries are retried
	// until SenderConfig.GiveUpAfter past it.
	EndedAt int64 `json:"ended_at"`
}

// SenderConfig configures a Sender.
type SenderConfig struct {
	// Secret signs the bodies (PURGE_CALLBACK_SECRET); without it nothing
	// is sent: a delivery fails, and is retried, until it is set.
	Secret string
	Allow  Allow
	// Timeout bounds one delivery attempt, answer included.
	Timeout time.Duration
	// GiveUpAfter: a delivery still failing this long after its request
	// ended is given up (logged and counted).
	GiveUpAfter time.Duration
	// Observe counts outcomes: delivered, retrying, failed (given up),
	// refused (by the allow-list). Nil: not counted.
	Observe func(outcome string)
	Log     zerolog.Logger
}

// Sender delivers callbacks: the purge:callback handler. Non-2xx answers
// (redirects are not followed), timeouts and connection errors are retried
// by asynq with the worker's backoff until GiveUpAfter; an address the
// allow-list refuses is not retried.
type Sender struct {
	cfg SenderConfig
	hc  *http.Client
}

// NewSender returns a Sender.
func NewSender(cfg SenderConfig) *Sender {
	if cfg.Observe == nil {
		cfg.Observe = func(string) {}
	}
	dialer := &net.Dialer{Timeout: cfg.Timeout, ControlContext: cfg.Allow.control}
	hc := &http.Client{
		Timeout: cfg.Timeout,
		// every delivery dials, so every delivery's address is checked;
		// no proxy, whose address the check would see instead
		Transport: &http.Transport{DialContext: dialer.DialContext, DisableKeepAlives: true, TLSHandshakeTimeout: cfg.Timeout, ForceAttemptHTTP2: true},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	return &Sender{cfg: cfg, hc: hc}
}

// ProcessTask delivers one callback.
func (s *Sender) ProcessTask(ctx context.Context, t *asynq.Task) error {
	var d Delivery
	if err := json.Unmarshal(t.Payload(), &d); err != nil {
		return fmt.Errorf("purge:callback payload: %v: %w", err, asynq.SkipRetry)
	}
	log := s.cfg.Log.With().Str("request", d.Status.ID).Str("state", string(d.Status.State)).Str("callback", redact(d.URL)).Logger()
	err := s.deliver(ctx, &d)
	since := time.Since(time.UnixMilli(d.EndedAt))
	switch {
	case err == nil:
		s.cfg.Observe("delivered")
		log.Info().Msg("callback delivered")
		return nil
	case errors.Is(err, ErrRefused):
		s.cfg.Observe("refused")
		log.Error().Err(err).Msg("callback refused: not sent, not retried")
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	case since >= s.cfg.GiveUpAfter:
		s.cfg.Observe("failed")
		log.Error().Err(err).Dur("since_end", since).Msg("callback failed: giving up")
		return fmt.Errorf("callback given up %s after the request ended: %w: %w", since.Round(time.Second), err, asynq.SkipRetry)
	}
	s.cfg.Observe("retrying")
	log.Warn().Err(err).Msg("callback not delivered: retrying")
	return err
}

// deliver POSTs the signed body once.
func (s *Sender) deliver(ctx context.Context, d *Delivery) error {
	if s.cfg.Secret == "" {
		return errors.New("PURGE_CALLBACK_SECRET is not set on this worker: callbacks are never sent unsigned")
	}
	u, err := url.Parse(d.URL)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrRefused, err)
	}
	if err := s.cfg.Allow.Check(u); err != nil {
		return fmt.Errorf("%w: %v", ErrRefused, err)
	}
	body, err := json.Marshal(Body{Status: d.Status, Timestamp: time.Now().UTC().Format(time.RFC3339)})
	if err != nil {
		return err
	}
	ctx = context.WithValue(ctx, namedKey{}, s.cfg.Allow.named(u.Hostname()))
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrRefused, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "purgeq-callback")
	req.Header.Set(SignatureHeader, Sign([]byte(s.cfg.Secret), body))
	resp, err := s.hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the URL, which may hold the receiver's token
		}
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("the receiver answered %s", resp.Status)
	}
	return nil
}

// redact is a URL for the logs: its scheme and host only (the path or the
// query may hold the receiver's token).
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "(an unreadable URL)"
	}
	return u.Scheme + "://" + u.Host + "/…"
}
