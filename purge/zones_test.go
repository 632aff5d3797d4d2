package purge_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/purgeq/purgeq/limits/rate"
	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/purge/cftest"
)

// TestListZonesEveryPage: 123 zones are three pages of 50, read in three
// calls and returned whole, in the API's order (by name), each with its
// account; the Ratelimit of the last answer comes along.
func TestListZonesEveryPage(t *testing.T) {
	zones := make(map[string]string)
	for i := range 123 {
		zones[fmt.Sprintf("site-%03d.example", i)] = fmt.Sprintf("zone-%03d", i)
	}
	sim := cftest.NewServer(cftest.Config{GlobalLimit: rate.Per(10, time.Minute), Accounts: []cftest.Account{
		{Name: "agency", Token: token, Zones: zones},
		{Name: "other", Token: "other-token", Zones: map[string]string{"other.example": "zone-other"}},
	}})
	defer sim.Close()
	c, err := purge.NewClient(purge.ClientConfig{BaseURL: sim.URL, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	got, ri, err := c.ListZones(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 123 {
		t.Fatalf("%d zones, want 123", len(got))
	}
	for i, z := range got {
		if want := (purge.Zone{ID: fmt.Sprintf("zone-%03d", i), Name: fmt.Sprintf("site-%03d.example", i), Account: "agency"}); z != want {
			t.Fatalf("zone %d = %+v, want %+v", i, z, want)
		}
	}
	if st := sim.Stats(); st.ZoneLists != 3 || st.Calls != 0 {
		t.Errorf("%d zone lists and %d purge calls, want 3 and 0", st.ZoneLists, st.Calls)
	}
	if ri == nil || ri.Remaining != 7 || ri.Reset <= 0 || ri.Reset > time.Minute {
		t.Errorf("Rate = %+v, want 7 remaining of 10, reset within the minute", ri)
	}
}

// TestListZonesRateLimited: a zone list counts against the token's global
// window; when the window is full the list fails as a purge would, global
// scope with Retry-After, and the block that follows refuses the next.
func TestListZonesRateLimited(t *testing.T) {
	sim := cftest.NewServer(cftest.Config{Token: token, Zones: []string{zone}, GlobalLimit: rate.Per(3, time.Minute), Block: 40 * time.Second})
	defer sim.Close()
	c, err := purge.NewClient(purge.ClientConfig{BaseURL: sim.URL, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	if n := sim.Spend(token, 3); n != 3 {
		t.Fatalf("Spend took %d slots, want 3", n)
	}
	zones, ri, err := c.ListZones(context.Background())
	var pe *purge.Error
	if !errors.As(err, &pe) || pe.Class != purge.RateLimited || pe.Scope != purge.ScopeGlobal || pe.Code != purge.CodeRateLimitGlobal ||
		pe.RetryAfter != 40*time.Second || zones != nil {
		t.Fatalf("ListZones = %v, %v; want RateLimited global with Retry-After 40s", zones, err)
	}
	if pe.Rate == nil || pe.Rate.Remaining != 0 || ri == nil || *ri != *pe.Rate {
		t.Errorf("Rate = %+v (returned %+v), want 0 remaining", pe.Rate, ri)
	}
	_, _, err = c.ListZones(context.Background())
	if !errors.As(err, &pe) || pe.Class != purge.RateLimited || pe.RetryAfter <= 0 || pe.RetryAfter > 40*time.Second {
		t.Fatalf("during the block: %v", err)
	}
	if st := sim.Stats(); st.Exceeded != 1 || st.DuringBlock != 1 || st.Global429 != 2 || st.MaxInWindow != 3 {
		t.Errorf("stats = %+v", st)
	}
}

// TestListZonesErrors: other failures are classified as a purge's are; the
// default account lists its zones under the names it was given.
func TestListZonesErrors(t *testing.T) {
	sim := cftest.NewServer(cftest.Config{Token: token, Zones: []string{zone}, ZoneNames: map[string]string{"example.com": zone}})
	defer sim.Close()
	wrong, err := purge.NewClient(purge.ClientConfig{BaseURL: sim.URL, Token: "wrong"})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = wrong.ListZones(context.Background())
	var pe *purge.Error
	if !errors.As(err, &pe) || pe.Class != purge.Misconfigured || pe.Code != purge.CodeAuth || pe.Status != http.StatusForbidden {
		t.Errorf("wrong token: %v, want Misconfigured 403 code 10000", err)
	}
	c, err := purge.NewClient(purge.ClientConfig{BaseURL: sim.URL, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	if zones, _, err := c.ListZones(context.Background()); err != nil || len(zones) != 1 ||
		zones[0] != (purge.Zone{ID: zone, Name: "example.com", Account: cftest.DefaultAccount}) {
		t.Errorf("ListZones = %+v, %v", zones, err)
	}

	for _, tt := range []struct {
		name   string
		status int
		body   string
		class  purge.Class
	}{
		{"5xx", 502, `bad gateway`, purge.Transient},
		{"truncated", 200, `{"success":true,"result":[{"id":"`, purge.Transient},
		{"a purge's envelope", 200, `{"success":true,"errors":[],"messages":[],"result":{"id":"x"}}`, purge.Transient},
		{"not success", 200, `{"success":false,"errors":[{"code":9109,"message":"Invalid access token"}],"result":null}`, purge.Permanent},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(tt.status)
			io.WriteString(w, tt.body)
		}))
		c, err := purge.NewClient(purge.ClientConfig{BaseURL: srv.URL, Token: token})
		if err != nil {
			t.Fatal(err)
		}
		zones, _, err := c.ListZones(context.Background())
		srv.Close()
		if !errors.As(err, &pe) || pe.Class != tt.class || zones != nil {
			t.Errorf("%s: %v, %v; want class %v", tt.name, zones, err, tt.class)
		}
	}
}

// TestListZonesStopsAndDeduplicates: paging ends at total_pages or at an
// empty page, and a zone met twice (the list shifted between pages) is
// returned once.
func TestListZonesStopsAndDeduplicates(t *testing.T) {
	var pages []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		page := r.URL.Query().Get("page")
		pages = append(pages, page+"/"+r.URL.Query().Get("per_page"))
		switch page {
		case "1":
			io.WriteString(w, `{"success":true,"result":[{"id":"a","name":"a.example","account":{"id":"1","name":"acc"}},{"id":"b","name":"b.example","account":{"id":"1","name":"acc"}}],"result_info":{"total_pages":99}}`)
		case "2":
			io.WriteString(w, `{"success":true,"result":[{"id":"b","name":"b.example","account":{"id":"1","name":"acc"}},{"id":"c","name":"c.example","account":{"id":"1","name":"acc"}}],"result_info":{"total_pages":99}}`)
		default:
			io.WriteString(w, `{"success":true,"result":[],"result_info":{"total_pages":99}}`)
		}
	}))
	defer srv.Close()
	c, err := purge.NewClient(purge.ClientConfig{BaseURL: srv.URL, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	zones, ri, err := c.ListZones(context.Background())
	if err != nil || len(zones) != 3 || zones[2].ID != "c" || ri != nil {
		t.Fatalf("ListZones = %+v, %+v, %v; want a, b, c and no Rate", zones, ri, err)
	}
	if fmt.Sprint(pages) != "[1/50 2/50 3/50]" {
		t.Errorf("pages asked: %v, want 1 to 3, 50 a page", pages)
	}
}
