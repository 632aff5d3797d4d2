package tasks

import (
	"fmt"
	"net/url"
	"time"

	"github.com/purgeq/purgeq/purge"
)

// MaxDelay bounds Delay and RepeatAfter: a deploy's timing is minutes, and
// a day is as long as a finished request's status is kept by default
// (PURGE_REQUEST_RETENTION); anything longer is a scheduler's job.
const MaxDelay = 24 * time.Hour

// CheckDelay refuses a negative duration or one over MaxDelay; name is the
// option's, for the message.
func CheckDelay(name string, d time.Duration) error {
	switch {
	case d < 0:
		return fmt.Errorf("%s %s is negative", name, d)
	case d > MaxDelay:
		return fmt.Errorf("%s %s is over the bound of %s", name, d, MaxDelay)
	}
	return nil
}

// ParseCallbackURL accepts an absolute http or https URL with a host.
func ParseCallbackURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return nil, fmt.Errorf("callback URL %q: %v", raw, err)
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("callback URL %q: scheme %q is not http or https", raw, u.Scheme)
	case u.Host == "" || u.Hostname() == "":
		return nil, fmt.Errorf("callback URL %q has no host", raw)
	case u.User != nil:
		return nil, fmt.Errorf("callback URL %q carries credentials: put a secret in the path or query, and verify the signature", raw)
	}
	return u, nil
}

// followups validates a request's callback and timing and sets them on
// req, naming every bad one.
func (c *Client) followups(pr PurgeRequest, req *Request) []purge.Invalid {
	var bad []purge.Invalid
	if pr.CallbackURL != "" {
		u, err := ParseCallbackURL(pr.CallbackURL)
		if err == nil && c.opts.CheckCallback != nil {
			err = c.opts.CheckCallback(u)
		}
		if err != nil {
			bad = append(bad, purge.Invalid{Item: pr.CallbackURL, Reason: err.Error()})
		}
		req.CallbackURL = pr.CallbackURL
	}
	for _, d := range []struct {
		name string
		d    time.Duration
	}{{"delay", pr.Delay}, {"repeat_after", pr.RepeatAfter}} {
		if err := CheckDelay(d.name, d.d); err != nil {
			bad = append(bad, purge.Invalid{Item: d.name + " " + d.d.String(), Reason: err.Error()})
		}
	}
	if pr.Delay > 0 {
		req.NotBefore = req.EnqueuedAt + pr.Delay.Milliseconds()
	}
	req.RepeatAfter = pr.RepeatAfter.Milliseconds()
	return bad
}

// RepeatID is the id of the request that repeats request id
// (PurgeRequest.RepeatAfter): derived, so that scheduling it twice
// schedules it once.
func RepeatID(id string) string { return id + "-repeat" }

// Repeat is the request that purges r's items again: its id is
// RepeatID's, it keeps r's items (a streamed one: r's staged chunks, moved
// to Repeat's StagingKey once r is admitted), attribution and callback, and
// does not repeat itself. The caller sets NotBefore.
func (r *Request) Repeat() *Request {
	rep := *r
	rep.ID, rep.RepeatOf, rep.RepeatAfter, rep.NotBefore = RepeatID(r.ID), r.ID, 0, 0
	// kept as an idempotent request is: its id stays reserved, so a repeat
	// scheduled again after a crash is recognised (by its nonce) as itself
	rep.Idempotent = true
	return &rep
}

// Follow sets the stream's callback and timing (PurgeRequest.CallbackURL,
// Delay, RepeatAfter); call it before Commit. A *purge.InvalidError names
// what is wrong.
func (s *Stream) Follow(pr PurgeRequest) error {
	if bad := s.c.followups(pr, &s.req); len(bad) > 0 {
		return &purge.InvalidError{Items: bad}
	}
	s.delay = pr.Delay // NotBefore counts from Commit
	return nil
}
