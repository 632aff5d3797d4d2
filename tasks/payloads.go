package tasks

import (
	"encoding/json"
	"fmt"

	"github.com/purgeq/purgeq/purge"
)

// Task types.
const (
	// TypeRequest carries one producer request into the outbox.
	TypeRequest = "purge:request"
	// TypeCall is one Cloudflare API call: a batch of one kind for one zone.
	TypeCall = "purge:call"
)

// Queues. The worker serves both; calls weigh more so that a flood of new
// requests cannot starve the calls that drain them.
const (
	QueueRequests = "purge-requests"
	QueueCalls    = "purge-calls"
)

// Request is the payload of a purge:request task: validated, normalised
// items grouped by zone id and kind.
type Request struct {
	ID string `json:"id"`
	// EnqueuedAt is the producer's clock, Unix milliseconds.
	EnqueuedAt int64 `json:"enqueued_at"`
	Soft       bool  `json:"soft,omitempty"`
	// Zones maps a zone id to its items by kind (Everything: ["*"]).
	Zones map[string]map[purge.Kind][]string `json:"zones"`
}

// Total is the number of items in the request.
func (r *Request) Total() int {
	n := 0
	for _, kinds := range r.Zones {
		for _, items := range kinds {
			n += len(items)
		}
	}
	return n
}

// Call is the payload of a purge:call task. The batching package's pop
// script writes it (in Lua, with cjson) when it takes a chunk from the
// outbox; this type is its Go side.
type Call struct {
	ID   string     `json:"id"`
	Zone string     `json:"zone"`
	Kind purge.Kind `json:"kind"`
	Soft bool       `json:"soft,omitempty"`
	// Items are canonical item keys; Sources[i] lists the request ids that
	// asked for Items[i] (space-separated).
	Items   []string `json:"items"`
	Sources []string `json:"sources"`
	// Oldest is when the oldest item was admitted (Unix ms, Redis clock).
	Oldest int64 `json:"oldest"`
}

// Batch is the call's API batch.
func (c *Call) Batch() purge.Batch {
	return purge.Batch{Kind: c.Kind, Items: c.Items, Soft: c.Soft}
}

// DecodeCall reads a purge:call payload.
func DecodeCall(b []byte) (*Call, error) {
	var c Call
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("purge:call payload: %w", err)
	}
	if len(c.Items) == 0 || len(c.Sources) != len(c.Items) {
		return nil, fmt.Errorf("purge:call payload: %d items with %d sources", len(c.Items), len(c.Sources))
	}
	return &c, nil
}

// DecodeRequest reads a purge:request payload.
func DecodeRequest(b []byte) (*Request, error) {
	var r Request
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("purge:request payload: %w", err)
	}
	if r.ID == "" {
		return nil, fmt.Errorf("purge:request payload has no id")
	}
	return &r, nil
}
