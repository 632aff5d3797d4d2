// Package batching coalesces purge items at dispatch time.
//
// Items wait in an outbox in Redis: one list per zone, kind and soft/hard
// ("lane"), in the order they were admitted, beside a set of their digests
// so that an item waiting twice is stored once (the layout is described at
// luaLanes). A purge-everything for a zone supersedes what waits
// for that zone (the requests that asked for those items are credited as
// superseded, not silently dropped) and covers what arrives while it waits.
//
// The Dispatcher turns waiting items into purge:call tasks. For each limit
// scope (the flex bucket, the URL bucket) it keeps a bounded window of
// outstanding calls (per dispatcher, so that a dead worker's calls, which
// asynq recovers only after their lease, block no one); it pops a chunk of at most the cap for the kind when
// the lane holds a full chunk, or when the lane's oldest item has waited
// the batch wait and the limits could carry the call now. Under pressure the
// window is full of calls waiting for tokens, so items pile up in the
// outbox and every call that leaves is full; with room to spare, items
// leave after at most the batch wait. Lanes of one scope are served round
// robin, so a zone with a huge backlog cannot starve a zone with one URL.
//
// The hand-off is crash-safe: the pop script records the chunk as in flight
// in the same atomic step that removes it from the lane; the record is
// cleared once the purge:call task is in asynq, and a reaper re-enqueues
// (with the same task id) any record older than a few seconds.
//
// All keys share the hash tag {purgeq}, so every script touches one Redis
// Cluster slot.
package batching
