package purge

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Kind is what a purge item names. Cloudflare accepts one kind per request.
type Kind string

// The kinds of purge item, named as Cloudflare's request body fields.
const (
	Files      Kind = "files"
	Tags       Kind = "tags"
	Hosts      Kind = "hosts"
	Prefixes   Kind = "prefixes"
	Everything Kind = "everything"
)

// Kinds lists every kind, in the order the project reports them.
var Kinds = []Kind{Files, Tags, Hosts, Prefixes, Everything}

// EverythingKey is the single item of an Everything batch.
const EverythingKey = "*"

// ParseKind reads a kind name; "urls" and "url" are accepted for files, and
// singular forms for the others.
func ParseKind(s string) (Kind, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "files", "file", "urls", "url":
		return Files, nil
	case "tags", "tag":
		return Tags, nil
	case "hosts", "host":
		return Hosts, nil
	case "prefixes", "prefix":
		return Prefixes, nil
	case "everything", "purge_everything":
		return Everything, nil
	}
	return "", fmt.Errorf("unknown kind %q: want files, tags, hosts, prefixes or everything", s)
}

// Flex reports whether the kind draws on the flex purge bucket (every kind
// but files, which draws on the URL bucket).
func (k Kind) Flex() bool { return k != Files }

// Invalid names one rejected item and why.
type Invalid struct {
	Item   string `json:"item"`
	Reason string `json:"reason"`
}

// InvalidError lists every rejected item of a request, not only the first.
type InvalidError struct {
	Items []Invalid
}

func (e *InvalidError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d invalid item", len(e.Items))
	if len(e.Items) != 1 {
		b.WriteByte('s')
	}
	for i, it := range e.Items {
		if i == 10 {
			fmt.Fprintf(&b, "; and %d more", len(e.Items)-10)
			break
		}
		fmt.Fprintf(&b, "; %q: %s", truncate(it.Item, 120), it.Reason)
	}
	return b.String()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// Normalize validates one item of kind k by Cloudflare's rules and returns its
// canonical key: the form sent to Cloudflare and compared for duplicates.
// Only what the cache key allows is normalised: URLs get a lowercase scheme
// and host and lose their fragment (path and query stay exact); tags and
// hosts, which Cloudflare compares case-insensitively, are lowercased;
// prefixes get a lowercase host.
func Normalize(k Kind, raw string) (string, error) {
	switch k {
	case Files:
		return normalizeURL(raw)
	case Tags:
		return normalizeTag(raw)
	case Hosts:
		return normalizeHost(raw)
	case Prefixes:
		return normalizePrefix(raw)
	case Everything:
		return EverythingKey, nil
	}
	return "", fmt.Errorf("unknown kind %q", k)
}

// NormalizeAll validates every item and returns the canonical keys in input
// order with duplicates removed, or an *InvalidError naming every bad item.
func NormalizeAll(k Kind, raws []string) ([]string, error) {
	out := make([]string, 0, len(raws))
	seen := make(map[string]struct{}, len(raws))
	var bad []Invalid
	for _, raw := range raws {
		key, err := Normalize(k, raw)
		if err != nil {
			bad = append(bad, Invalid{Item: raw, Reason: err.Error()})
			continue
		}
		if _, dup := seen[key]; dup {
			continue
		}
		seen[key] = struct{}{}
		out = append(out, key)
	}
	if bad != nil {
		return nil, &InvalidError{Items: bad}
	}
	return out, nil
}

// File is a URL with the request headers that form part of its cache key.
type File struct {
	URL     string            `json:"url"`
	Headers map[string]string `json:"headers,omitempty"`
}

// cacheKeyHeaders are the headers Cloudflare documents for purging a URL's
// variants, in their documented spelling.
var cacheKeyHeaders = map[string]string{
	"cf-device-type":  "CF-Device-Type",
	"cf-ipcountry":    "CF-IPCountry",
	"accept-language": "Accept-Language",
	"origin":          "Origin",
}

// NormalizeFile validates a URL with cache-key headers. Without headers the
// key is the normalised URL; with them it is the canonical JSON object
// {"url":…,"headers":{…}} that Cloudflare's body carries, so that the same
// variant compares equal however it was spelled.
func NormalizeFile(f File) (string, error) {
	u, err := normalizeURL(f.URL)
	if err != nil || len(f.Headers) == 0 {
		return u, err
	}
	headers := make(map[string]string, len(f.Headers))
	for name, value := range f.Headers {
		if !isToken(name) {
			return "", fmt.Errorf("header name %q is not a valid HTTP header name", name)
		}
		if canonical, ok := cacheKeyHeaders[strings.ToLower(name)]; ok {
			name = canonical
		}
		for _, r := range value {
			if r < 0x20 || r == 0x7f {
				return "", fmt.Errorf("header %s: value contains a control character", name)
			}
		}
		headers[name] = value
	}
	return encodeJSON(File{URL: u, Headers: headers})
}

// ParseFileKey splits a files key into its URL and headers.
func ParseFileKey(key string) (File, error) {
	if !strings.HasPrefix(key, "{") {
		return File{URL: key}, nil
	}
	var f File
	err := json.Unmarshal([]byte(key), &f)
	return f, err
}

// URLHost is the hostname of a normalised URL (or files key), without port.
func URLHost(key string) string {
	_, rest, _ := strings.Cut(ItemURL(key), "://")
	if end := strings.IndexAny(rest, "/?#"); end >= 0 {
		rest = rest[:end]
	}
	if strings.HasPrefix(rest, "[") { // IPv6 literal
		if end := strings.IndexByte(rest, ']'); end > 0 {
			return rest[1:end]
		}
	}
	if colon := strings.LastIndexByte(rest, ':'); colon >= 0 {
		rest = rest[:colon]
	}
	return rest
}

// ItemURL is the URL a files key names (the key itself unless it carries headers).
func ItemURL(key string) string {
	if f, err := ParseFileKey(key); err == nil {
		return f.URL
	}
	return key
}

func normalizeURL(raw string) (string, error) {
	if err := checkText(raw, "URL"); err != nil {
		return "", err
	}
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return "", fmt.Errorf("not an absolute URL: want http:// or https://")
	}
	scheme = strings.ToLower(scheme)
	if scheme != "http" && scheme != "https" {
		return "", fmt.Errorf("scheme %q is not allowed: want http or https", scheme)
	}
	if strings.Contains(rest, "*") {
		return "", fmt.Errorf("wildcards are not supported in URLs; purge by prefix instead")
	}
	rest, _, _ = strings.Cut(rest, "#")
	end := strings.IndexAny(rest, "/?")
	if end < 0 {
		end = len(rest)
	}
	host := strings.ToLower(rest[:end])
	switch {
	case host == "":
		return "", fmt.Errorf("missing host")
	case strings.Contains(host, "@"):
		return "", fmt.Errorf("credentials in the URL are not allowed")
	}
	out := scheme + "://" + host + rest[end:]
	u, err := url.Parse(out)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return "", fmt.Errorf("unparseable URL: %v", err)
	}
	if u.Hostname() == "" {
		return "", fmt.Errorf("missing host")
	}
	return out, nil
}

const (
	maxTagLen           = 1024 // characters in one cache tag (error 1100)
	maxHostLen          = 200  // characters in one hostname (error 1114)
	maxPrefixSeparators = 31
)

func normalizeTag(raw string) (string, error) {
	switch {
	case raw == "":
		return "", fmt.Errorf("empty tag")
	case len(raw) > maxTagLen:
		return "", fmt.Errorf("tag is %d characters; Cloudflare allows at most %d", len(raw), maxTagLen)
	}
	for i := 0; i < len(raw); i++ {
		if c := raw[i]; c < 0x21 || c > 0x7e {
			return "", fmt.Errorf("tag must be printable ASCII without spaces: character %q at byte %d", rune(c), i)
		}
	}
	return strings.ToLower(raw), nil
}

func normalizeHost(raw string) (string, error) {
	switch {
	case raw == "":
		return "", fmt.Errorf("empty host")
	case len(raw) > maxHostLen:
		return "", fmt.Errorf("host is %d characters; Cloudflare allows at most %d", len(raw), maxHostLen)
	case strings.Contains(raw, "://"):
		return "", fmt.Errorf("host must be a bare hostname, not a URL")
	case strings.ContainsAny(raw, "/?#"):
		return "", fmt.Errorf("host must not include a path; purge by prefix for that")
	case strings.Contains(raw, ":"):
		return "", fmt.Errorf("host must not include a port")
	}
	h := strings.ToLower(raw)
	for _, label := range strings.Split(h, ".") {
		if label == "" {
			return "", fmt.Errorf("host has an empty label")
		}
		if len(label) > 63 {
			return "", fmt.Errorf("host label %q is over 63 characters", truncate(label, 20))
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				if r > unicode.MaxASCII {
					return "", fmt.Errorf("host must be ASCII: write internationalised names as punycode (xn--…)")
				}
				return "", fmt.Errorf("host contains %q; want letters, digits, hyphens and dots", r)
			}
		}
	}
	return h, nil
}

func normalizePrefix(raw string) (string, error) {
	if err := checkText(raw, "prefix"); err != nil {
		return "", err
	}
	switch {
	case strings.Contains(raw, "://"):
		return "", fmt.Errorf("prefix must not include a scheme: write host/path")
	case strings.Contains(raw, "?"):
		return "", fmt.Errorf("prefix must not include a query string")
	case strings.Contains(raw, "#"):
		return "", fmt.Errorf("prefix must not include a fragment")
	case strings.Contains(raw, "*"):
		return "", fmt.Errorf("wildcards are not supported in prefixes")
	}
	host, path, ok := strings.Cut(raw, "/")
	if !ok {
		return "", fmt.Errorf("prefix must be host/path; purge a whole hostname by host instead")
	}
	h, err := normalizeHost(host)
	if err != nil {
		return "", fmt.Errorf("prefix %v", err)
	}
	if n := strings.Count(path, "/") + 1; n > maxPrefixSeparators {
		return "", fmt.Errorf("prefix has %d path separators; Cloudflare allows at most %d", n, maxPrefixSeparators)
	}
	return h + "/" + path, nil
}

// checkText rejects what no URL or prefix may contain.
func checkText(s, what string) error {
	if s == "" {
		return fmt.Errorf("empty %s", what)
	}
	ascii := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f {
			ascii = false
			break
		}
	}
	if ascii { // the common case: printable ASCII needs no rune-by-rune check
		return nil
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%s is not valid UTF-8", what)
	}
	for _, r := range s {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return fmt.Errorf("%s contains whitespace or a control character (%q); percent-encode it", what, r)
		}
	}
	return nil
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("\"(),/:;<=>?@[\\]{}", c) >= 0 {
			return false
		}
	}
	return true
}

// encodeJSON marshals v without HTML escaping: Cloudflare matches cache keys
// byte for byte, and Go would otherwise write & as \u0026.
func encodeJSON(v any) (string, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return "", err
	}
	return strings.TrimSuffix(b.String(), "\n"), nil
}
