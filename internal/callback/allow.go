// Package callback follows up on requests that end: it signs and delivers
// completion callbacks (Sender, the purge:callback handler), checks where a
// callback may go (Allow), and turns each end the outbox's scripts note
// into asynq tasks, the callback's delivery and the request's repeat
// (Follower).
package callback

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"syscall"
)

// Allow is PURGE_CALLBACK_ALLOW: the hosts and networks callbacks may
// reach. Empty, any. Otherwise a callback URL's host must be a listed
// host name (".example.com" lists its subdomains too), or an address in a
// listed CIDR; a host name not listed passes at enqueue only when CIDRs
// are listed, for the address it resolves to decides. At delivery the
// address actually dialled is checked again: it must be in a listed CIDR,
// or belong to a listed host name and be a public address (a listed name
// that resolves to a loopback, private, link-local or unspecified address
// needs that address's CIDR listed too), so that DNS cannot steer a
// callback into an internal network.
type Allow struct {
	hosts []string
	nets  []*net.IPNet
	raw   string
}

// Decode parses the comma-separated list (envconfig.Decoder).
func (a *Allow) Decode(v string) error {
	*a = Allow{raw: v}
	var errs []error
	for _, e := range strings.Split(v, ",") {
		e = strings.ToLower(strings.TrimSpace(e))
		switch {
		case e == "":
			continue
		case strings.Contains(e, "://") || strings.ContainsAny(e, "@?# "):
			errs = append(errs, fmt.Errorf("PURGE_CALLBACK_ALLOW: %q is neither a host name nor a CIDR", e))
		case strings.Contains(e, "/"):
			_, n, err := net.ParseCIDR(e)
			if err != nil {
				errs = append(errs, fmt.Errorf("PURGE_CALLBACK_ALLOW: %q is not a CIDR", e))
				continue
			}
			a.nets = append(a.nets, n)
		case net.ParseIP(e) != nil:
			ip := net.ParseIP(e)
			bits := 8 * len(ip.To4())
			if bits == 0 {
				bits = 128
			}
			a.nets = append(a.nets, &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)})
		case strings.Contains(e, ":"):
			errs = append(errs, fmt.Errorf("PURGE_CALLBACK_ALLOW: %q: a host name takes no port", e))
		default:
			a.hosts = append(a.hosts, e)
		}
	}
	return errors.Join(errs...)
}

// String is the list as configured.
func (a Allow) String() string { return a.raw }

// any reports whether every host is allowed (an empty list).
func (a Allow) any() bool { return len(a.hosts) == 0 && len(a.nets) == 0 }

// named reports whether host is a listed host name.
func (a Allow) named(host string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, h := range a.hosts {
		if host == h || (strings.HasPrefix(h, ".") && (strings.HasSuffix(host, h) || host == h[1:])) {
			return true
		}
	}
	return false
}

// inNets reports whether ip is in a listed CIDR.
func (a Allow) inNets(ip net.IP) bool {
	for _, n := range a.nets {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}

// Check is the enqueue-time check of a callback URL (no DNS lookup).
func (a Allow) Check(u *url.URL) error {
	host := u.Hostname()
	switch ip := net.ParseIP(host); {
	case a.any() || a.named(host):
		return nil
	case ip != nil && a.inNets(ip):
		return nil
	case ip == nil && len(a.nets) > 0:
		return nil // its address is checked when the callback is delivered
	}
	return fmt.Errorf("callback host %q is not in PURGE_CALLBACK_ALLOW (%s)", host, a.raw)
}

// checkAddr is the delivery-time check of the address dialled for a URL
// whose host was (named) or was not a listed host name.
func (a Allow) checkAddr(named bool, ip net.IP) error {
	switch {
	case a.any() || a.inNets(ip):
		return nil
	case named && !internal(ip):
		return nil
	case named:
		return fmt.Errorf("address %s is internal (loopback, private, link-local or unspecified) and in no CIDR of PURGE_CALLBACK_ALLOW (%s)", ip, a.raw)
	}
	return fmt.Errorf("address %s is in no CIDR of PURGE_CALLBACK_ALLOW (%s)", ip, a.raw)
}

// internal: an address a public callback receiver does not have.
func internal(ip net.IP) bool {
	return ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsInterfaceLocalMulticast() || ip.IsUnspecified() || ip.IsMulticast()
}

// namedKey marks, in a dial's context, that the URL's host is a listed
// host name.
type namedKey struct{}

// ErrRefused wraps a delivery the allow-list refused.
var ErrRefused = errors.New("refused by PURGE_CALLBACK_ALLOW")

// control is the dialer's ControlContext: it sees the address about to be
// dialled, after DNS, and refuses one the list does not allow.
func (a Allow) control(ctx context.Context, _, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return fmt.Errorf("%w: %q is not an address", ErrRefused, host)
	}
	named, _ := ctx.Value(namedKey{}).(bool)
	if err := a.checkAddr(named, ip); err != nil {
		return fmt.Errorf("%w: %v", ErrRefused, err)
	}
	return nil
}
