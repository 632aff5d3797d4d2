package purge

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestNormalize(t *testing.T) {
	long := func(n int) string { return strings.Repeat("a", n) }
	tests := []struct {
		kind    Kind
		in      string
		want    string // "" with wantErr
		wantErr string // substring of the reason
	}{
		// URLs: only scheme and host are lowercased, the fragment dropped.
		{Files, "https://www.example.com/a.css", "https://www.example.com/a.css", ""},
		{Files, "HTTPS://WWW.Example.COM/Path/A.css", "https://www.example.com/Path/A.css", ""},
		{Files, "http://example.com", "http://example.com", ""},
		{Files, "https://example.com/a?b=1&c=2", "https://example.com/a?b=1&c=2", ""},
		{Files, "https://example.com/a?B=1&c=%2F", "https://example.com/a?B=1&c=%2F", ""},
		{Files, "https://example.com/a#frag", "https://example.com/a", ""},
		{Files, "https://example.com/a?q=1#frag", "https://example.com/a?q=1", ""},
		{Files, "https://example.com/caf%C3%A9", "https://example.com/caf%C3%A9", ""},
		{Files, "https://example.com/café", "https://example.com/café", ""},
		{Files, "https://example.com/%7Euser/", "https://example.com/%7Euser/", ""},
		{Files, "https://example.com:8443/x", "https://example.com:8443/x", ""},
		{Files, "https://EXAMPLE.com?x=Y", "https://example.com?x=Y", ""},
		{Files, "https://例え.jp/パス", "https://例え.jp/パス", ""},
		{Files, "", "", "empty URL"},
		{Files, "example.com/a", "", "not an absolute URL"},
		{Files, "/a.css", "", "not an absolute URL"},
		{Files, "ftp://example.com/a", "", "scheme \"ftp\""},
		{Files, "javascript://x", "", "scheme"},
		{Files, "https:///a", "", "missing host"},
		{Files, "https://example.com/*.css", "", "wildcards"},
		{Files, "https://*.example.com/", "", "wildcards"},
		{Files, "https://example.com/a b", "", "whitespace"},
		{Files, "https://example.com/a\tb", "", "whitespace"},
		{Files, "https://user:pw@example.com/", "", "credentials"},
		{Files, "https://example.com/\xff", "", "UTF-8"},
		{Files, "https://exa mple.com/", "", "whitespace"},
		{Files, "https://example.com:port/", "", "unparseable"},
		// Tags: 1–1024 printable ASCII, no spaces; case-insensitive.
		{Tags, "product-1234", "product-1234", ""},
		{Tags, "Product-ABC", "product-abc", ""},
		{Tags, long(1024), long(1024), ""},
		{Tags, long(1025), "", "1025 characters"},
		{Tags, "", "", "empty tag"},
		{Tags, "two words", "", "printable ASCII"},
		{Tags, "tab\there", "", "printable ASCII"},
		{Tags, "café", "", "printable ASCII"},
		{Tags, "a&b=c", "a&b=c", ""},
		// Hosts: bare hostnames up to 200 characters.
		{Hosts, "www.example.com", "www.example.com", ""},
		{Hosts, "WWW.Example.com", "www.example.com", ""},
		{Hosts, "example.com:443", "", "port"},
		{Hosts, "example.com/path", "", "path"},
		{Hosts, "https://example.com", "", "not a URL"},
		{Hosts, "", "", "empty host"},
		{Hosts, strings.Repeat("a.", 100) + "com", "", "203 characters"},
		{Hosts, "a..com", "", "empty label"},
		{Hosts, "bad_host!.com", "", "contains '!'"},
		{Hosts, "bücher.de", "", "punycode"},
		{Hosts, "xn--bcher-kva.de", "xn--bcher-kva.de", ""},
		{Hosts, long(64) + ".com", "", "over 63"},
		// Prefixes: host/path, no scheme, query or fragment, ≤31 separators.
		{Prefixes, "www.example.com/blog/", "www.example.com/blog/", ""},
		{Prefixes, "WWW.Example.com/Blog/", "www.example.com/Blog/", ""},
		{Prefixes, "example.com/", "example.com/", ""},
		{Prefixes, "https://www.example.com/blog/", "", "scheme"},
		{Prefixes, "www.example.com/blog?x=1", "", "query string"},
		{Prefixes, "www.example.com/blog#x", "", "fragment"},
		{Prefixes, "www.example.com", "", "host/path"},
		{Prefixes, "example.com:8080/x", "", "port"},
		{Prefixes, "example.com/" + strings.Repeat("a/", 30) + "b", "example.com/" + strings.Repeat("a/", 30) + "b", ""},
		{Prefixes, "example.com/" + strings.Repeat("a/", 31) + "b", "", "32 path separators"},
		{Prefixes, "example.com/a b", "", "whitespace"},
		{Prefixes, "", "", "empty prefix"},
		{Prefixes, "example.com/*", "", "wildcards"},
		{Everything, "", EverythingKey, ""},
	}
	for _, tt := range tests {
		got, err := Normalize(tt.kind, tt.in)
		switch {
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("Normalize(%s, %q) = %q, %v; want error containing %q", tt.kind, tt.in, got, err, tt.wantErr)
		case tt.wantErr == "" && (err != nil || got != tt.want):
			t.Errorf("Normalize(%s, %q) = %q, %v; want %q", tt.kind, tt.in, got, err, tt.want)
		}
	}
	if len(tests) < 40 {
		t.Fatalf("only %d cases", len(tests))
	}
}

func TestNormalizeAllNamesEveryBadItem(t *testing.T) {
	_, err := NormalizeAll(Files, []string{"https://ok.example/", "nope", "https://ok.example/2", "ftp://x/", ""})
	var ie *InvalidError
	if !errors.As(err, &ie) {
		t.Fatalf("err = %v, want *InvalidError", err)
	}
	var named []string
	for _, it := range ie.Items {
		named = append(named, it.Item)
		if it.Reason == "" {
			t.Errorf("item %q has no reason", it.Item)
		}
	}
	if strings.Join(named, ",") != "nope,ftp://x/," {
		t.Errorf("named %q, want nope, ftp://x/ and the empty item", named)
	}
	if !strings.Contains(err.Error(), "3 invalid items") {
		t.Errorf("message %q does not count the items", err)
	}
}

func TestNormalizeAllDeduplicates(t *testing.T) {
	got, err := NormalizeAll(Tags, []string{"A", "a", "b", "B", "a"})
	if err != nil || strings.Join(got, ",") != "a,b" {
		t.Errorf("got %q, %v; want a,b", got, err)
	}
}

func TestNormalizeFile(t *testing.T) {
	key, err := NormalizeFile(File{URL: "HTTPS://Example.com/a?x=1&y=2", Headers: map[string]string{"cf-device-type": "mobile", "Origin": "https://www.example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"url":"https://example.com/a?x=1&y=2","headers":{"CF-Device-Type":"mobile","Origin":"https://www.example.com"}}`
	if key != want {
		t.Errorf("key = %s\nwant  %s", key, want)
	}
	if got := ItemURL(key); got != "https://example.com/a?x=1&y=2" {
		t.Errorf("ItemURL = %q", got)
	}
	if k, _ := NormalizeFile(File{URL: "https://example.com/a"}); k != "https://example.com/a" {
		t.Errorf("without headers the key is the URL, got %q", k)
	}
	if _, err := NormalizeFile(File{URL: "https://example.com/", Headers: map[string]string{"Bad Header": "x"}}); err == nil {
		t.Error("a header name with a space was accepted")
	}
	if _, err := NormalizeFile(File{URL: "https://example.com/", Headers: map[string]string{"Origin": "a\nb"}}); err == nil {
		t.Error("a header value with a newline was accepted")
	}
}

func TestParseKind(t *testing.T) {
	for in, want := range map[string]Kind{"files": Files, "URLs": Files, "url": Files, "tag": Tags, "hosts": Hosts, "prefix": Prefixes, "everything": Everything} {
		if got, err := ParseKind(in); err != nil || got != want {
			t.Errorf("ParseKind(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParseKind("cookies"); err == nil {
		t.Error("ParseKind(cookies) succeeded")
	}
}

// FuzzNormalize checks the validators' invariants on any input: they never
// panic, a key they return is valid UTF-8 and a fixed point, and it
// contains no whitespace.
func FuzzNormalize(f *testing.F) {
	for _, s := range []string{"https://www.example.com/a.css", "HTTPS://X.com/A#f", "https://example.com/a?b=1&c=2", "product-1", "www.example.com", "www.example.com/blog/", "https://例え.jp/パス", "a..b", "http://[::1]:80/", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		for _, k := range []Kind{Files, Tags, Hosts, Prefixes} {
			key, err := Normalize(k, in)
			if err != nil {
				continue
			}
			if !utf8.ValidString(key) || strings.ContainsAny(key, " \t\r\n") {
				t.Fatalf("%s %q: key %q is not clean", k, in, key)
			}
			again, err := Normalize(k, key)
			if err != nil || again != key {
				t.Fatalf("%s %q: key %q normalises to %q, %v", k, in, key, again, err)
			}
		}
	})
}

func TestURLHost(t *testing.T) {
	for in, want := range map[string]string{
		"https://www.example.com/a?b": "www.example.com", "http://example.com:8080": "example.com", "https://example.com?x=1": "example.com",
		"http://[::1]:80/x": "::1", `{"url":"https://h.example/x","headers":{"Origin":"o"}}`: "h.example",
	} {
		if got := URLHost(in); got != want {
			t.Errorf("URLHost(%q) = %q, want %q", in, got, want)
		}
	}
}
