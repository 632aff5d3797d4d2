package logging

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

// TestJSONTimeHasMilliseconds: the JSON "time" field is RFC 3339 with
// milliseconds.
func TestJSONTimeHasMilliseconds(t *testing.T) {
	var b bytes.Buffer
	log, err := New(&b, "info", "json")
	if err != nil {
		t.Fatal(err)
	}
	log.Info().Msg("hello")
	var line struct{ Time string }
	if err := json.Unmarshal(b.Bytes(), &line); err != nil {
		t.Fatalf("%v: %s", err, b.String())
	}
	at, err := time.Parse(TimeFormat, line.Time)
	if err != nil {
		t.Fatalf("time %q is not %s: %v", line.Time, TimeFormat, err)
	}
	if len(line.Time) < len("2006-01-02T15:04:05.000Z") || line.Time[19] != '.' {
		t.Errorf("time %q has no milliseconds", line.Time)
	}
	if d := time.Since(at); d < 0 || d > time.Minute {
		t.Errorf("time %q is %v away from now", line.Time, d)
	}
}
