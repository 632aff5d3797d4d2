package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/purgeq/purgeq/batching"
	"github.com/purgeq/purgeq/internal/config"
	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/tasks"
)

// side is where the CLI queues requests and reads their progress: Redis
// itself (conn), or an intake over HTTP (remote: --server, PURGE_SERVER),
// so that a deploy job needs only HTTPS and a token.
type side interface {
	queue(ctx context.Context, o options, pr tasks.PurgeRequest, stdin io.Reader, stdout, stderr io.Writer) (tasks.Receipt, error)
	Status(ctx context.Context, id string) (batching.Status, error)
	deadItemsOf(ctx context.Context, id string) string
	cooldowns(ctx context.Context) func() map[string]time.Duration
	history(ctx context.Context, item, zone string) ([]batching.Entry, error)
	close()
}

// serverKey holds --server (given before any sub-command) in a context.
type serverKey struct{}

// withServer takes a leading --server URL (or --server=URL) off args.
func withServer(ctx context.Context, args []string) (context.Context, []string, error) {
	if len(args) == 0 {
		return ctx, args, nil
	}
	if v, ok := strings.CutPrefix(args[0], "--server="); ok {
		return context.WithValue(ctx, serverKey{}, v), args[1:], nil
	}
	if args[0] == "--server" {
		if len(args) < 2 {
			return ctx, args, usageError("--server needs the intake's URL (http(s)://host:port)")
		}
		return context.WithValue(ctx, serverKey{}, args[1]), args[2:], nil
	}
	return ctx, args, nil
}

// openSide opens the intake named by --server or PURGE_SERVER, else Redis.
func openSide(ctx context.Context) (side, error) {
	cfg, err := config.Load()
	if err != nil {
		return nil, usageError("%v", err)
	}
	server, _ := ctx.Value(serverKey{}).(string)
	if server == "" {
		server = cfg.Server
	}
	if server == "" {
		return connect(ctx, cfg, true)
	}
	if !strings.HasPrefix(server, "http://") && !strings.HasPrefix(server, "https://") {
		return nil, usageError("--server %q: want http(s)://host:port", server)
	}
	if cfg.ServerToken == "" {
		return nil, usageError("PURGE_SERVER_TOKEN is not set: the intake at %s accepts only requests bearing a producer's token", server)
	}
	return &remote{base: strings.TrimSuffix(server, "/"), token: cfg.ServerToken, hc: &http.Client{Timeout: 10 * time.Minute}}, nil
}

// remote is an intake over HTTP.
type remote struct {
	base, token string
	hc          *http.Client
}

func (r *remote) close() {}

func (r *remote) cooldowns(context.Context) func() map[string]time.Duration { return nil }

func (r *remote) deadItemsOf(_ context.Context, id string) string {
	return "\n(enqueue dlq list, with access to Redis, names them; enqueue status " + id + " shows the counts)"
}

// do sends a request to the intake and decodes a 2xx answer into out; any
// other answer is an error with the exit code it deserves.
func (r *remote) do(ctx context.Context, method, path string, body io.Reader, header http.Header, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, r.base+path, body)
	if err != nil {
		return err
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	req.Header.Set("Authorization", "Bearer "+r.token)
	resp, err := r.hc.Do(req)
	if err != nil {
		return fmt.Errorf("the intake at %s: %w (nothing was queued)", r.base, errors.Unwrap(err))
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("reading the intake's answer: %w", err)
	}
	if resp.StatusCode/100 == 2 {
		return json.Unmarshal(raw, out)
	}
	var e struct {
		Error   string          `json:"error"`
		Invalid []purge.Invalid `json:"invalid"`
	}
	json.Unmarshal(raw, &e)
	if e.Error == "" {
		e.Error = strings.TrimSpace(string(raw))
	}
	switch resp.StatusCode {
	case http.StatusBadRequest:
		var b strings.Builder
		b.WriteString(e.Error)
		for _, it := range e.Invalid {
			fmt.Fprintf(&b, "\n  %q: %s", it.Item, it.Reason)
		}
		return &exitError{exitInvalid, errors.New(b.String())}
	case http.StatusNotFound:
		return batching.ErrUnknownRequest
	case http.StatusUnauthorized:
		return fmt.Errorf("the intake at %s refused the token (PURGE_SERVER_TOKEN): %s", r.base, e.Error)
	case http.StatusTooManyRequests:
		return fmt.Errorf("%s (HTTP 429; retry after %ss)", e.Error, resp.Header.Get("Retry-After"))
	}
	return fmt.Errorf("the intake at %s answered %d: %s", r.base, resp.StatusCode, e.Error)
}

// queue sends the request to the intake: POST /v1/purge, or with --from
// the file streamed to POST /v1/purge/stream.
func (r *remote) queue(ctx context.Context, o options, pr tasks.PurgeRequest, stdin io.Reader, stdout, stderr io.Writer) (tasks.Receipt, error) {
	header := http.Header{}
	if pr.IdempotencyKey != "" {
		header.Set("Idempotency-Key", pr.IdempotencyKey)
	}
	var rc struct {
		tasks.Receipt
		Skipped []purge.Invalid `json:"skipped"`
	}
	if o.from == "" {
		body := map[string]any{"zone": pr.Zone, "files": pr.Files, "tags": pr.Tags, "hosts": pr.Hosts, "prefixes": pr.Prefixes,
			"purge_everything": pr.Everything, "soft": pr.Soft, "source": pr.Source, "priority": pr.Priority,
			"callback_url": pr.CallbackURL, "delay": durationOrEmpty(pr.Delay), "repeat_after": durationOrEmpty(pr.RepeatAfter)}
		if pr.Files == nil {
			delete(body, "files") // a null list is not an empty one
		}
		for _, k := range []string{"callback_url", "delay", "repeat_after"} {
			if body[k] == "" {
				delete(body, k) // an intake older than them refuses unknown fields
			}
		}
		b, err := json.Marshal(body)
		if err != nil {
			return tasks.Receipt{}, err
		}
		header.Set("Content-Type", "application/json")
		err = r.do(ctx, http.MethodPost, "/v1/purge", strings.NewReader(string(b)), header, &rc)
		return rc.Receipt, err
	}
	if len(pr.Files)+len(pr.Tags)+len(pr.Hosts)+len(pr.Prefixes) > 0 || pr.Everything {
		return tasks.Receipt{}, usageError("with --server, --from carries all the items: put the flags' items in the file")
	}
	in := stdin
	if o.from != "-" {
		f, err := os.Open(o.from)
		if err != nil {
			return tasks.Receipt{}, usageError("--from: %v", err)
		}
		defer f.Close()
		in = f
	}
	q := url.Values{"kind": {o.kind}, "zone": {o.zone}, "source": {pr.Source}, "priority": {pr.Priority},
		"callback_url": {pr.CallbackURL}, "delay": {durationOrEmpty(pr.Delay)}, "repeat_after": {durationOrEmpty(pr.RepeatAfter)}}
	if o.soft {
		q.Set("soft", "true")
	}
	if o.skipInvalid {
		q.Set("skip_invalid", "true")
	}
	header.Set("Content-Type", "text/plain")
	// the file is the body: streamed, never held in memory
	err := r.do(ctx, http.MethodPost, "/v1/purge/stream?"+q.Encode(), io.NopCloser(in), header, &rc)
	for _, b := range rc.Skipped {
		fmt.Fprintf(stderr, "enqueue: skipped %s: %s\n", b.Item, b.Reason)
	}
	return rc.Receipt, err
}

// durationOrEmpty is d for the intake: empty for none.
func durationOrEmpty(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return d.String()
}

func (r *remote) history(ctx context.Context, item, zone string) ([]batching.Entry, error) {
	var out []batching.Entry
	err := r.do(ctx, http.MethodGet, "/v1/history?"+url.Values{"item": {item}, "zone": {zone}}.Encode(), nil, nil, &out)
	return out, err
}

// Status reads a request's progress from the intake.
func (r *remote) Status(ctx context.Context, id string) (batching.Status, error) {
	var st batching.Status
	err := r.do(ctx, http.MethodGet, "/v1/purge/"+url.PathEscape(id), nil, nil, &st)
	return st, err
}
