package purge

import (
	"encoding/json"
	"net/http"
)

// Cloudflare's response envelope, read by the client and written by the
// servers that speak Cloudflare's API (the simulator, the intake's
// Cloudflare-compatible route).

// Envelope is Cloudflare's response shape.
type Envelope struct {
	Success  bool       `json:"success"`
	Errors   []APIError `json:"errors"`
	Messages []APIError `json:"messages"`
	Result   *Result    `json:"result"`
}

// APIError is one entry of an envelope's errors or messages.
type APIError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// Result is a purge's result: the id Cloudflare assigned.
type Result struct {
	ID string `json:"id"`
}

// WriteJSON answers an HTTP request with v as JSON, without HTML escaping,
// the way Cloudflare's API answers (used by the simulator and the intake).
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}
