// Package tasks defines the queue's task types and payloads (purge:request,
// purge:call) and Client, the producer API that every entry point uses to
// queue purges: it validates every item, resolves each to a configured zone,
// honours idempotency keys and returns once the request is durably in Redis.
package tasks
