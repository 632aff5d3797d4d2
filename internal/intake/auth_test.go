package intake

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/purgeq/purgeq/batching"
	"github.com/purgeq/purgeq/tasks"
)

// refusingQueue answers every status as unknown and queues nothing: the
// tests below only tell 401 from anything else.
type refusingQueue struct{ t *testing.T }

func (q refusingQueue) Build(tasks.PurgeRequest) (*tasks.Request, error) {
	q.t.Error("Build called")
	return nil, batching.ErrUnknownRequest
}

func (q refusingQueue) EnqueueBuilt(context.Context, *tasks.Request) (tasks.Receipt, error) {
	q.t.Error("EnqueueBuilt called")
	return tasks.Receipt{}, batching.ErrUnknownRequest
}

func (q refusingQueue) Status(context.Context, string) (batching.Status, error) {
	return batching.Status{}, batching.ErrUnknownRequest
}

// TestAuthRefusesBlankCredentials: a credential that is empty once trimmed
// (U+00A0 is whitespace to strings.TrimSpace) never matches, even when an
// empty token slipped into the configuration.
func TestAuthRefusesBlankCredentials(t *testing.T) {
	for _, tokens := range [][]string{{"s3cr3t"}, {"s3cr3t", ""}, {"s3cr3t", "\u00a0"}} {
		h := Handler(Options{Queue: refusingQueue{t}, Tokens: tokens, MaxBody: 1 << 20, Log: zerolog.Nop()})
		for _, tc := range []struct {
			header, value string
			want401       bool
		}{
			{"Authorization", "Bearer \u00a0", true},
			{"X-Auth-Key", "\u00a0", true},
			{"Authorization", "Bearer ", true},
			{"Authorization", "Bearer  \t", true},
			{"X-Auth-Key", " ", true},
			{"", "", true},
			{"Authorization", "Bearer wrong", true},
			{"Authorization", "Bearer s3cr3t", false},
			{"Authorization", "Bearer \u00a0s3cr3t ", false},
			{"X-Auth-Key", "s3cr3t", false},
		} {
			for _, path := range []string{"/v1/purge/some-id", "/client/v4/zones/z1/purge_cache"} {
				method := http.MethodGet
				if strings.HasPrefix(path, "/client/") {
					method = http.MethodPost
				}
				req := httptest.NewRequest(method, path, strings.NewReader(`{"purge_everything":true}`))
				if tc.header != "" {
					req.Header.Set(tc.header, tc.value)
				}
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if got := rec.Code == http.StatusUnauthorized; got != tc.want401 {
					t.Errorf("tokens %q, %s %s with %s: %q: status %d, want 401: %v", tokens, method, path, tc.header, tc.value, rec.Code, tc.want401)
				}
			}
		}
	}
}
