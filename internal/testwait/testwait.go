// Package testwait waits in tests for a condition with a deadline, instead
// of sleeping and hoping.
package testwait

import (
	"testing"
	"time"
)

// For polls cond every 20 ms until it holds, failing the test with what
// was awaited once d has passed.
func For(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
