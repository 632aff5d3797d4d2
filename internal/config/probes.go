package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"strings"

	"github.com/purgeq/purgeq/limits/rate"
)

// Probes configures verification and warming requests after a URL purge
// (internal/probe). Every such request is a GET to the purged URL, not an
// API call: none counts against Cloudflare's API limits.
type Probes struct {
	// Verify is the fraction of purged URLs fetched once after Cloudflare
	// accepted their purge; 0 (the default) fetches none, 1 every one.
	Verify float64 `envconfig:"VERIFY" default:"0" desc:"fraction (0–1) of purged URLs fetched once after Cloudflare accepted the purge; a CF-Cache-Status: HIT whose Age reaches back before the purge is purged once more, and the outcome goes into history"`
	// Warm fetches every purged URL once after its purge (origin refill).
	Warm bool `envconfig:"WARM" default:"false" desc:"after a URL purge is accepted, fetch each purged URL once (origin refill)"`
	// WarmRate bounds every request of both kinds a worker makes, evenly
	// spaced.
	WarmRate rate.Rate `envconfig:"WARM_RATE" default:"10/1s" desc:"most warming and verification requests per worker, N/DURATION, evenly spaced"`
	// ProbeResolve sends those requests for a host and port to another
	// address (tests, split-horizon DNS).
	ProbeResolve Resolve `envconfig:"PROBE_RESOLVE" desc:"host:port:addr,… like curl's --resolve (addr an IP, without a port): where verification and warming requests for that host and port go (tests, split DNS)"`
}

// Resolve maps "host:port" (host in lower case) to the address that
// connections to it dial instead ("addr:port"), as curl's --resolve does.
type Resolve map[string]string

// Decode reads PURGE_PROBE_RESOLVE: comma-separated host:port:addr
// entries, addr an IP address (an IPv6 one in brackets or bare).
func (r *Resolve) Decode(s string) error {
	out := Resolve{}
	var errs []error
	for entry := range strings.SplitSeq(s, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		host, rest, ok1 := strings.Cut(entry, ":")
		port, addr, ok2 := strings.Cut(rest, ":")
		addr = strings.TrimSuffix(strings.TrimPrefix(addr, "["), "]")
		switch {
		case !ok1 || !ok2 || host == "":
			errs = append(errs, fmt.Errorf("%q: want host:port:addr", entry))
		case !validPort(port):
			errs = append(errs, fmt.Errorf("%q: port %q is not a number from 1 to 65535", entry, port))
		case net.ParseIP(addr) == nil:
			errs = append(errs, fmt.Errorf("%q: %q is not an IP address", entry, addr))
		default:
			out[net.JoinHostPort(strings.ToLower(host), port)] = net.JoinHostPort(addr, port)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	*r = out
	return nil
}

func validPort(p string) bool {
	n := 0
	for _, c := range p {
		if c < '0' || c > '9' {
			return false
		}
		n = n*10 + int(c-'0')
		if n > 65535 {
			return false
		}
	}
	return n > 0
}

// checkProbes names every problem of the probe settings.
func (p *Probes) checkProbes() error {
	var errs []error
	if math.IsNaN(p.Verify) || p.Verify < 0 || p.Verify > 1 {
		errs = append(errs, fmt.Errorf("PURGE_VERIFY must be a fraction from 0 to 1 (got %v)", p.Verify))
	}
	if p.WarmRate.IsZero() && (p.Warm || p.Verify > 0) {
		errs = append(errs, errors.New("PURGE_WARM_RATE is empty: want N/DURATION, e.g. 10/1s"))
	}
	return errors.Join(errs...)
}
