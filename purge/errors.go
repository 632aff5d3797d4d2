package purge

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Class is what the queue should do about a failed purge call. It is decided
// once, here, from the status, Cloudflare's error code and headers; the
// worker maps it onto asynq.
type Class int

const (
	// Transient: 5xx, timeouts, resets, unreadable responses. Retry with backoff.
	Transient Class = iota + 1
	// RateLimited: a rate-limit code (971, 10100, 1134) under any HTTP
	// status, or a 429. Wait for the scope's cooldown; never a failure.
	RateLimited
	// Permanent: the request or some of its items can never succeed.
	// Error.Items names the offending items when Cloudflare did.
	Permanent
	// Misconfigured: bad token, missing permission or unknown zone. Nothing
	// on that zone or token succeeds until an operator fixes the configuration.
	Misconfigured
)

func (c Class) String() string {
	switch c {
	case Transient:
		return "transient"
	case RateLimited:
		return "rate_limited"
	case Permanent:
		return "permanent"
	case Misconfigured:
		return "misconfigured"
	}
	return fmt.Sprintf("Class(%d)", int(c))
}

// Scope is which of Cloudflare's limits a 429 came from.
type Scope string

const (
	// ScopeGlobal is the API token's 1200-per-5-minutes window (codes 971,
	// 10100): exceeding it blocks every call on the token for 5 minutes.
	ScopeGlobal Scope = "global"
	// ScopeFlex is the account's tag/host/prefix/everything bucket (1134).
	ScopeFlex Scope = "flex"
	// ScopeURL is the account's URL bucket (1134 on a files purge).
	ScopeURL Scope = "url"
)

// BucketScope is the purge bucket calls of kind k draw on.
func BucketScope(k Kind) Scope {
	if k.Flex() {
		return ScopeFlex
	}
	return ScopeURL
}

// Cloudflare error codes this package classifies
// (https://developers.cloudflare.com/cache/how-to/purge-cache/,
// https://developers.cloudflare.com/fundamentals/api/reference/limits/ and
// https://developers.cloudflare.com/api/resources/cache/methods/purge/).
const (
	CodeAuth             = 10000 // authentication error / token lacks Cache Purge
	CodeNoRoute          = 7003  // could not route: bad zone id
	CodeNoRouteMethod    = 7000
	CodeRateLimitGlobal  = 971   // global API limit (HTTP 429, 5-minute block)
	CodeRateLimitOld     = 10100 // "More than 1200 requests per 300 seconds reached"
	CodeRateLimitPurge   = 1134  // purge bucket empty
	CodeMissingField     = 1012
	CodeEverythingFalse  = 1013
	CodeNotArrays        = 1014
	CodeUnableToPurge    = 1015 // "Unable to purge <url>"
	CodeUnableToPurgeAny = 1016
	CodeEverythingMixed  = 1092
	CodeTooManyFiles     = 1094
	CodeTagTooLong       = 1100
	CodeTooManyTags      = 1101
	CodeTooManyHosts     = 1111
	CodeHostTooLong      = 1114
	CodeInvalidHost      = 1115
)

// Error is every unsuccessful outcome of a purge call (and of ListZones).
// Its Class says what to do; errors.As(err, &*purge.Error) finds it.
type Error struct {
	Class Class
	// Scope and RetryAfter are set for RateLimited: the limit hit and
	// Cloudflare's hint (Retry-After, else the Ratelimit header's reset;
	// zero when neither was sent).
	Scope      Scope
	RetryAfter time.Duration
	// Status is the HTTP status (0 when none arrived); Code and Message the
	// first Cloudflare error, or for RateLimited the rate-limit error that
	// decided the class.
	Status  int
	Code    int
	Message string
	// Items are the batch items Cloudflare's errors named (Permanent only).
	Items []string
	// Rate is what the answer's Ratelimit header said of the token's global
	// window; nil when it had none or no answer arrived.
	Rate *RateInfo
	// Err is the transport error behind a Transient class, if any.
	Err error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("purge: ")
	b.WriteString(e.Class.String())
	if e.Scope != "" {
		fmt.Fprintf(&b, " (%s", e.Scope)
		if e.RetryAfter > 0 {
			fmt.Fprintf(&b, ", retry after %s", e.RetryAfter)
		}
		b.WriteByte(')')
	}
	if e.Status != 0 {
		fmt.Fprintf(&b, ": HTTP %d", e.Status)
	}
	if e.Code != 0 {
		fmt.Fprintf(&b, ": code %d", e.Code)
	}
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", e.Message)
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	if len(e.Items) > 0 {
		fmt.Fprintf(&b, " (%d item(s) named)", len(e.Items))
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// ClassOf returns err's Class; an error that is not a *Error (a cancelled
// context, say) is Transient.
func ClassOf(err error) Class {
	var pe *Error
	if errors.As(err, &pe) {
		return pe.Class
	}
	return Transient
}
