package rate

import (
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in      string
		want    Rate
		wantErr bool
	}{
		{"1200/5m", Per(1200, 5*time.Minute), false},
		{"5/1m", Per(5, time.Minute), false},
		{"800/1s", Per(800, time.Second), false},
		{"5/s", Per(5, time.Second), false},
		{" 10 / 250ms ", Per(10, 250*time.Millisecond), false},
		{"1200", Rate{}, true},
		{"0/1s", Rate{}, true},
		{"-1/1s", Rate{}, true},
		{"x/1s", Rate{}, true},
		{"5/0s", Rate{}, true},
		{"5/fortnight", Rate{}, true},
	}
	for _, tt := range tests {
		got, err := Parse(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("Parse(%q) = %v, %v; want %v, err=%v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestStringRoundTrip(t *testing.T) {
	for _, r := range []Rate{Per(1200, 5*time.Minute), Per(5, time.Minute), Per(800, time.Second), Per(3, 90*time.Second), Per(1, 2*time.Hour)} {
		got, err := Parse(r.String())
		if err != nil || got != r {
			t.Errorf("Parse(%q) = %v, %v; want %v", r.String(), got, err, r)
		}
	}
	if s := Per(1200, 5*time.Minute).String(); s != "1200/5m" {
		t.Errorf("String = %q, want 1200/5m", s)
	}
}
