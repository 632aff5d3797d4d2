package config

import (
	"errors"
	"net/url"

	"github.com/purgeq/purgeq/internal/callback"
)

// Callbacks configures completion callbacks (internal/callback).
type Callbacks struct {
	// CallbackSecret signs every callback; producers refuse a callback URL
	// while it is unset, and workers never send a callback unsigned.
	CallbackSecret string `envconfig:"CALLBACK_SECRET" desc:"HMAC-SHA256 key that signs completion callbacks (X-Purgeq-Signature: sha256=<hex> over the body); without it producers refuse callback URLs (never logged)"`
	// CallbackAllow limits where callbacks go.
	CallbackAllow callback.Allow `envconfig:"CALLBACK_ALLOW" desc:"hosts (.example.com: its subdomains too) or CIDRs completion callbacks may reach, comma-separated (default: any); checked at enqueue and against the address dialled"`
}

// CheckCallback is what a producer checks of a callback URL beyond its
// scheme (tasks.ClientOptions.CheckCallback): that it can be signed, and
// that PURGE_CALLBACK_ALLOW allows its host.
func (c Callbacks) CheckCallback(u *url.URL) error {
	if c.CallbackSecret == "" {
		return errors.New("callbacks are signed with PURGE_CALLBACK_SECRET, which is not set here: set it (the same value as the workers'), or leave the callback out")
	}
	return c.CallbackAllow.Check(u)
}
