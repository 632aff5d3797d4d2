package worker

import (
	"testing"

	"github.com/purgeq/purgeq/internal/config"
	"github.com/purgeq/purgeq/tasks"
)

// TestListedZonesDoNotTakeConfiguredOnes: an account whose token also
// sees another account's configured zone does not take it by listing.
func TestListedZonesDoNotTakeConfiguredOnes(t *testing.T) {
	main := &account{cfg: config.Account{Name: "main", Zones: tasks.Zones{{Name: "example.com", ID: "z1"}}}}
	lister := &account{cfg: config.Account{Name: "lister"}}
	as := &accounts{list: []*account{main, lister}, byZone: map[string]zoneOf{}, zones: map[*account]tasks.Zones{}}
	as.set(main, main.cfg.Zones)
	as.set(lister, tasks.Zones{{Name: "example.com", ID: "z1"}, {Name: "example.org", ID: "z2"}})
	as.set(lister, tasks.Zones{{Name: "example.org", ID: "z2"}}) // a later listing
	if a, _ := as.of("z1"); a != main {
		t.Errorf("z1 routes to %v, want main", a)
	}
	if a, _ := as.of("z2"); a != lister {
		t.Errorf("z2 routes to %v, want lister", a)
	}
	if n := len(as.Zones()); n != 2 {
		t.Errorf("%d zones published, want 2", n)
	}
}
