package purge

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// RateInfo is what Cloudflare's Ratelimit header says of the token's limit:
// how many calls remain, and how long until the window frees capacity.
type RateInfo struct {
	Remaining int
	Reset     time.Duration
}

// ParseRatelimit reads the Ratelimit header as Cloudflare sends it
// (`"default";r=50;t=30`, the IETF httpapi-ratelimit-headers form): a list
// of policies, each a name and parameters, r the calls remaining and t the
// seconds until the window resets. It tolerates spaces, a quoted or bare
// name, quoted values, unknown parameters and several policies, separated by
// commas or on several header lines: the policy with the fewest calls
// remaining is returned (the longer reset on a tie). A policy without r, or
// with an r or t that is not a non-negative number, is ignored; a missing t
// is zero. ok is false when no policy could be read.
func ParseRatelimit(h http.Header) (RateInfo, bool) {
	var best RateInfo
	found := false
	for _, line := range h.Values("Ratelimit") {
		for _, item := range splitUnquoted(line, ',') {
			ri, ok := parsePolicy(item)
			if ok && (!found || ri.Remaining < best.Remaining || ri.Remaining == best.Remaining && ri.Reset > best.Reset) {
				best, found = ri, true
			}
		}
	}
	return best, found
}

// maxResetSeconds bounds t (about 31 years), well inside a time.Duration.
const maxResetSeconds = 1e9

// parsePolicy reads one policy: `"name";r=50;t=30`.
func parsePolicy(item string) (RateInfo, bool) {
	var ri RateInfo
	hasR := false
	for i, member := range splitUnquoted(item, ';') {
		member = strings.TrimSpace(member)
		key, value, isParam := strings.Cut(member, "=")
		if i == 0 && (!isParam || strings.HasPrefix(member, `"`)) {
			continue // the policy's name
		}
		value = strings.Trim(strings.TrimSpace(value), `"`)
		switch strings.ToLower(strings.TrimSpace(key)) {
		case "r":
			n, err := strconv.Atoi(value)
			if err != nil || n < 0 {
				return RateInfo{}, false
			}
			ri.Remaining, hasR = n, true
		case "t":
			secs, err := strconv.ParseFloat(value, 64)
			if err != nil || !(secs >= 0 && secs <= maxResetSeconds) {
				return RateInfo{}, false
			}
			ri.Reset = time.Duration(secs * float64(time.Second))
		}
	}
	return ri, hasR
}

// splitUnquoted splits s at every sep that is not inside double quotes.
func splitUnquoted(s string, sep byte) []string {
	var parts []string
	quoted, start := false, 0
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\' && quoted:
			i++ // an escaped character
		case s[i] == '"':
			quoted = !quoted
		case s[i] == sep && !quoted:
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	return append(parts, s[start:])
}

// rateOf is the Ratelimit header's RateInfo, or nil when it has none.
func rateOf(h http.Header) *RateInfo {
	if ri, ok := ParseRatelimit(h); ok {
		return &ri
	}
	return nil
}
