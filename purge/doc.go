// Package purge is the Cloudflare purge client and item model.
//
// It validates and normalises purge items by Cloudflare's rules (Normalize,
// NormalizeAll, NormalizeFile), encodes one kind per request exactly as
// Cloudflare expects (Batch.Body: JSON without HTML escaping), sends it
// (Client.Purge, to purge_cache or, for soft purges, invalidate_cache),
// lists the token's zones (Client.ListZones, every page of GET /zones),
// reads Cloudflare's Ratelimit header (ParseRatelimit; Accepted.Rate and
// Error.Rate carry it) and classifies every outcome once: accepted, or a *Error whose Class is
// Transient, RateLimited (with Scope and RetryAfter), Permanent (with the
// items Cloudflare named) or Misconfigured. It never retries; the queue does.
//
// Plans holds each Cloudflare plan's caps and purge buckets as defaults to
// override. The sub-package cftest is a Cloudflare simulator for tests,
// benchmarks and `worker --dev`.
package purge
