// Package batching coalesces purge items at dispatch time.
//
// Items wait in an outbox in Redis: one list per zone, kind and soft/hard
// ("lane"), in the order they were admitted, beside a set of their digests
// so that an item waiting twice is stored once (the layout is described at
// lua/lanes.lua). A purge-everything for a zone supersedes what waits
// for that zone and covers what arrives while it waits: the requests that
// asked for those items ride with the everything item (as rid~n in its
// source list) and are credited as superseded when that call is accepted,
// or dead-lettered with it. Admission runs in slices of 1,000 items, so a
// huge request never holds Redis for long.
//
// Three types share one Redis client and one script library (lua/), each
// owning a part: Outbox the items on their way (admit, pop, hand-off, and
// each call's outcome, recorded once: purged items credited, dead ones
// dead-lettered, the parts of a failed call to send again put in flight in
// the same script); Requests the status of each request (purged, dead and
// superseded items; queued while asynq still holds it); DeadLetters the
// dead-letter queue, which keeps every entry until an operator acts. Every
// script answers a retry (after a lost reply) as it answered the first run.
// Every key is spelled in internal/keyspace.
//
// The Dispatcher turns waiting items into purge:call tasks. For each limit
// scope (the flex bucket, the URL bucket) it keeps a bounded window of
// outstanding calls (per dispatcher, so that a dead worker's calls, which
// asynq recovers only after their lease, block no one); it pops a chunk of
// at most the cap for the kind once the lane's oldest item has waited the
// batch wait (a full chunk at once with EagerFull), a partial one only when
// the limits could carry the call now. Under pressure the
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
