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
}

func keysFor(scope string) keys {
	p := "purgeq:limits:{" + scope + "}:"
	return keys{
		window:     p + "window",
		flex:       p + "bucket:flex",
		url:        p + "bucket:url",
		coolGlobal: p + "cooldown:global",
		coolFlex:   p + "cooldown:flex",
		coolURL:    p + "cooldown:url",
		claimFlex:  p + "claim:flex",
		claimURL:   p + "claim:url",
	}
}

// bucket returns the bucket and cooldown keys of a bucket scope.
func (k keys) bucket(s purge.Scope) (bucket, cooldown string) {
	if s == purge.ScopeURL {
		return k.url, k.coolURL
	}
	return k.flex, k.coolFlex
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
