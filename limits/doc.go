// Package limits enforces Cloudflare's limits for every worker process that
// shares one Redis: the global window per API token, the account's purge
// token buckets (flex purges in requests, URL purges in URLs) and the
// cooldowns that follow a 429.
//
// One Lua script takes everything a call needs at once — a slot in the
// global window and the bucket's tokens — or nothing, and otherwise says how
// long until it could succeed, cooldowns included. Time is the Redis
// server's (TIME), so workers whose clocks differ still agree.
//
// The global window is a true sliding window (a sorted set of acquisition
// times): no interval of the window's length ever holds more acquisitions
// than the limit. A token bucket with burst = limit would admit twice the
// limit across a window boundary. Because Cloudflare counts arrivals, not
// acquisitions, the window kept here is longer than Cloudflare's by a guard
// time: calls acquired up to the guard apart may arrive reordered or
// delayed without Cloudflare ever seeing more than the limit in its window.
// The buckets keep the same guard as a reserve: a call takes its tokens only
// when the bucket would still hold what the guard time refills.
//
// Keys of one token share a Redis Cluster hash tag, so a script touches one
// slot. The token itself never reaches Redis: keys carry a fingerprint.
package limits
