package limits

import (
	"crypto/sha256"
	"encoding/hex"

	"github.com/purgeq/purgeq/purge"
)

// Fingerprint names an API token in keys, logs and metrics without
// revealing it: the first 12 hex digits of its SHA-256.
func Fingerprint(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:6])
}

// keys are the Redis keys of one token's limits, all in one hash slot.
type keys struct {
	window                        string // sorted set: acquisition time (µs) per call
	flex, url                     string // hash: tokens, ts (µs)
	coolGlobal, coolFlex, coolURL string // string: cooldown end (µs)
	claimFlex, claimURL           string // string: a high call's claim on the next token
	waitFlex, waitURL             string // zset: lanes waiting for the bucket (+ ":until" hash)
	globalWaiters                 string // zset: lanes waiting for the window (+ ":until" hash)
	served                        string // zset: lane → last grant
	cloudflare                    string // hash: Cloudflare's own count (Observe)
	wanted                        string // hash: slots scarce buckets want of the window
}

// keysFor names the keys of a token's window and an account's buckets.
// Cloudflare counts the global window per token and the purge buckets per
// account; every key shares the token's hash slot, so that one script
// takes from both. The account "" is a single-account deployment's (the
// keys it always used).
func keysFor(token, account string) keys {
	p := "purgeq:limits:{" + token + "}:"
	b := p
	if account != "" {
		b += "account:" + account + ":"
	}
	return keys{
		window:     p + "window",
		coolGlobal: p + "cooldown:global",
		flex:       b + "bucket:flex",
		url:        b + "bucket:url",
		coolFlex:   b + "cooldown:flex",
		coolURL:    b + "cooldown:url",
		claimFlex:  b + "claim:flex",
		claimURL:   b + "claim:url",
		waitFlex:   b + "waiters:flex",
		waitURL:    b + "waiters:url",

		globalWaiters: p + "waiters:global",
		served:        p + "served",
		cloudflare:    p + "cloudflare",
		wanted:        p + "wanted",
	}
}

// bucket returns the bucket and cooldown keys of a bucket scope.
func (k keys) bucket(s purge.Scope) (bucket, cooldown string) {
	if s == purge.ScopeURL {
		return k.url, k.coolURL
	}
	return k.flex, k.coolFlex
}

// waiters is the line of lanes waiting for a bucket scope.
func (k keys) waiters(s purge.Scope) string {
	if s == purge.ScopeURL {
		return k.waitURL
	}
	return k.waitFlex
}

// claim is the claim key of a bucket scope.
func (k keys) claim(s purge.Scope) string {
	if s == purge.ScopeURL {
		return k.claimURL
	}
	return k.claimFlex
}

func (k keys) cooldown(s purge.Scope) string {
	switch s {
	case purge.ScopeGlobal:
		return k.coolGlobal
	case purge.ScopeURL:
		return k.coolURL
	}
	return k.coolFlex
}
