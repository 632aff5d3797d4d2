// Package keyspace spells every Redis key of purgeq's own namespace,
// purgeq:{purgeq}: — the outbox, requests, dead letters, markers and what
// producers share with workers — in one place. {purgeq} is the Redis
// Cluster hash tag, so every script touches one slot. (The limits keep
// their keys per API token in limits/keys.go; asynq's keys are asynq's.)
//
// The scripts in batching/lua build the per-lane and per-request keys from
// Prefix (passed to them as an argument), in the forms documented below:
// the lanes and requests a script touches follow from data it reads (a
// call's sources, a lane's admissions), so they cannot all be declared in
// KEYS; they share the hash tag.
package keyspace

import "strconv"

// Prefix starts every key of the namespace.
const Prefix = "purgeq:{purgeq}:"

// Keys written by the scripts from Prefix (lane is zone|kind|soft):
//
//	lane:<lane>             list of waiting items in admission order
//	has:<lane>              set of their SHA-1 digests (20 bytes)
//	grp:<lane>              hash: admission number → "ms count rid…", head, taken, n
//	dup:<lane>              set of digests asked for again while waiting
//	again:<lane>:<digest>   list of the requests that asked again
//	req:<id>                hash: a request's counters and status (Request)
//	everything-sent:<lane>  the last purge-everything call popped for a zone (expires after PURGE_EVERYTHING_MIN_INTERVAL)
//	merged:<call>           requests whose purge-everything merged into that call
//	meta:<id>               hash: a request's follow-ups (callback, timing; RequestMeta)
const (
	// Lanes is the set of lanes with items waiting.
	Lanes = Prefix + "lanes"
	// Ready indexes the lanes by when the dispatcher should look at them
	// next (a sorted set, server ms; batching/lua/lanes.lua).
	Ready = Prefix + "ready"
	// Inflight holds popped or re-sent calls not yet handed to asynq (by
	// call id) and InflightAt when each was put there.
	Inflight   = Prefix + "inflight"
	InflightAt = Prefix + "inflight:at"
	// Dead holds the dead-letter entries by id and DeadAt their times.
	Dead   = Prefix + "dlq"
	DeadAt = Prefix + "dlq:at"
	// Resent counts calls sent again after an attempt with an unknown outcome.
	Resent = Prefix + "stats:resent"
	// Zones holds the zones the workers run with, for producers.
	Zones = Prefix + "zones"
	// ZonesWanted is set by a producer that met a host matching no zone:
	// workers listing zones through the API then list them sooner.
	ZonesWanted = Prefix + "zones-wanted"
	// Replicated is written before WAIT (tasks.ClientOptions.Replicas).
	Replicated = Prefix + "replicated"
	// History holds the purge history's entries by call id, HistoryAt
	// their times (batching.History).
	History    = Prefix + "hist"
	HistoryAt  = Prefix + "hist:at"
	HistoryIDs = Prefix + "hist:ids"
	HistorySeq = Prefix + "hist:seq"
	// MetricsLease names the worker that exports the shared state's
	// metrics (internal/metrics); it expires unless renewed.
	MetricsLease = Prefix + "metrics:lease"
)

// HistoryDay is a day's item index of the purge history (day: Unix days).
func HistoryDay(day int64) string { return Prefix + "hist:day:" + strconv.FormatInt(day, 10) }

// Calls counts an account's calls to Cloudflare in an hour (Unix hours),
// by Unix minute (batching.CallLog).
func Calls(account string, hour int64) string {
	return Prefix + "calls:" + account + ":" + strconv.FormatInt(hour, 10)
}

// Sent marks that an attempt of a call is about to reach the API (value:
// the attempt's token and whether it was the first send).
func Sent(callID string) string { return Prefix + "sent:" + callID }

// Recorded marks a call whose outcome is recorded (value: "+" and the ids
// of its dead-letter entries).
func Recorded(callID string) string { return Prefix + "recorded:" + callID }

// FirstFail holds when a call first failed transiently (Unix ms).
func FirstFail(callID string) string { return Prefix + "firstfail:" + callID }

// Outstanding holds one dispatcher's outstanding calls of a limit scope.
func Outstanding(scope, owner string) string {
	return Prefix + "outstanding:" + scope + ":" + owner
}

// Request is a request's status hash.
func Request(id string) string { return Prefix + "req:" + id }

// RequestMeta is a request's follow-ups: its callback URL, not-before
// time, repeat and the end last noted (batching.Requests).
func RequestMeta(id string) string { return Prefix + "meta:" + id }

// Ended lists "id state" for each end (done or failed) of a request with
// follow-ups, until a worker has made them asynq tasks (internal/callback).
const Ended = Prefix + "ended"

// RepeatOf holds the payload of the request that will repeat request id,
// until it is scheduled.
func RepeatOf(id string) string { return Prefix + "repeat:" + id }

// Staging holds a streamed request's chunks by index, per invocation.
func Staging(id, nonce string) string {
	key := Prefix + "staging:" + id
	if nonce != "" {
		key += ":" + nonce
	}
	return key
}
