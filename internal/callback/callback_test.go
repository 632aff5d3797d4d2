package callback

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/rs/zerolog"

	"github.com/purgeq/purgeq/batching"
	"github.com/purgeq/purgeq/tasks"
)

func allow(t *testing.T, v string) Allow {
	t.Helper()
	var a Allow
	if err := a.Decode(v); err != nil {
		t.Fatal(err)
	}
	return a
}

func TestAllowDecode(t *testing.T) {
	var a Allow
	err := a.Decode("hooks.example.com, 10.0.0.0/8,,192.0.2.7, 300.1.1.1/8, http://x.example")
	if err == nil || !strings.Contains(err.Error(), `"300.1.1.1/8" is not a CIDR`) || !strings.Contains(err.Error(), `"http://x.example" is neither`) {
		t.Fatalf("bad entries: %v", err)
	}
	if len(a.hosts) != 1 || len(a.nets) != 2 {
		t.Errorf("parsed %v hosts, %v nets", a.hosts, a.nets)
	}
}

// TestAllowCheck: the enqueue-time decision on a URL, and the
// delivery-time decision on the address dialled.
func TestAllowCheck(t *testing.T) {
	list := allow(t, "hooks.example.com,.corp.example,203.0.113.0/24")
	for raw, ok := range map[string]bool{
		"https://hooks.example.com/x":     true,
		"https://HOOKS.example.com./x":    true,
		"https://a.corp.example/x":        true,
		"https://corp.example/x":          true,
		"https://203.0.113.9:8443/x":      true,
		"https://198.51.100.1/x":          false, // an address in no CIDR
		"https://elsewhere.example.net/x": true,  // a name: its address decides at delivery
	} {
		u, _ := url.Parse(raw)
		if err := list.Check(u); (err == nil) != ok {
			t.Errorf("%s: %v, want allowed %v", raw, err, ok)
		}
	}
	names := allow(t, "hooks.example.com")
	u, _ := url.Parse("https://elsewhere.example.net/x")
	if err := names.Check(u); err == nil || !strings.Contains(err.Error(), "PURGE_CALLBACK_ALLOW") {
		t.Errorf("a name not listed, no CIDRs: %v", err)
	}
	for _, c := range []struct {
		list  Allow
		named bool
		ip    string
		ok    bool
	}{
		{list, false, "203.0.113.5", true},
		{list, false, "198.51.100.1", false},
		{list, true, "198.51.100.1", true}, // a listed name's public address
		{list, true, "127.0.0.1", false},   // a listed name that resolves inward
		{list, true, "10.1.2.3", false},
		{list, true, "169.254.169.254", false},
		{allow(t, "hooks.internal,10.0.0.0/8"), true, "10.1.2.3", true},
		{Allow{}, false, "127.0.0.1", true}, // no list: anywhere
	} {
		if err := c.list.checkAddr(c.named, net.ParseIP(c.ip)); (err == nil) != c.ok {
			t.Errorf("%v named=%v %s: %v, want allowed %v", c.list.raw, c.named, c.ip, err, c.ok)
		}
	}
}

// receiver is a callback receiver answering the statuses given, in turn
// (then 200), recording what it got.
type receiver struct {
	*httptest.Server
	mu      sync.Mutex
	answers []int
	got     []delivered
}

type delivered struct {
	body      []byte
	signature string
	at        time.Time
}

func newReceiver(t *testing.T, answers ...int) *receiver {
	r := &receiver{answers: answers}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.got = append(r.got, delivered{b, req.Header.Get(SignatureHeader), time.Now()})
		code := http.StatusOK
		if len(r.answers) > 0 {
			code, r.answers = r.answers[0], r.answers[1:]
		}
		r.mu.Unlock()
		w.WriteHeader(code)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) deliveries() []delivered {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]delivered(nil), r.got...)
}

func task(t *testing.T, d Delivery) *asynq.Task {
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	return asynq.NewTask(tasks.TypeCallback, b)
}

const secret = "s3cret-for-tests"

// TestSenderRetriesAndSigns: a 500 is an error (asynq retries it), the
// next attempt's 200 delivers; each body is signed, carries the status
// and a fresh timestamp; the secret appears in neither payload nor logs.
func TestSenderRetriesAndSigns(t *testing.T) {
	rcv := newReceiver(t, http.StatusInternalServerError)
	var logs strings.Builder
	var outcomes []string
	s := NewSender(SenderConfig{Secret: secret, Timeout: 2 * time.Second, GiveUpAfter: time.Hour,
		Observe: func(o string) { outcomes = append(outcomes, o) }, Log: zerolog.New(&logs)})
	st := batching.Status{ID: "r1", State: batching.Done, Total: 2, Purged: 2}
	d := Delivery{URL: rcv.URL + "/hook?token=receiver-token", Status: st, EndedAt: time.Now().UnixMilli()}
	tk := task(t, d)
	if err := s.ProcessTask(context.Background(), tk); err == nil || !strings.Contains(err.Error(), "500") {
		t.Fatalf("a 500: %v, want an error naming it", err)
	}
	if err := s.ProcessTask(context.Background(), tk); err != nil {
		t.Fatalf("the retry: %v", err)
	}
	got := rcv.deliveries()
	if len(got) != 2 || strings.Join(outcomes, ",") != "retrying,delivered" {
		t.Fatalf("%d deliveries, outcomes %v", len(got), outcomes)
	}
	for _, g := range got {
		if !Verify([]byte(secret), g.body, g.signature) || Verify([]byte("other"), g.body, g.signature) {
			t.Errorf("signature %q does not verify %s", g.signature, g.body)
		}
		var b Body
		if err := json.Unmarshal(g.body, &b); err != nil || b.ID != "r1" || b.State != batching.Done || b.Purged != 2 {
			t.Errorf("body %s: %v", g.body, err)
		}
		if ts, err := time.Parse(time.RFC3339, b.Timestamp); err != nil || time.Since(ts) > time.Minute {
			t.Errorf("timestamp %q: %v", b.Timestamp, err)
		}
	}
	if strings.Contains(string(tk.Payload())+logs.String(), secret) || strings.Contains(logs.String(), "receiver-token") {
		t.Errorf("the secret or the receiver's token leaked:\n%s\n%s", tk.Payload(), logs.String())
	}
}

// TestSenderGivesUp: still failing GiveUpAfter past the end, a delivery is
// given up (not retried by asynq), logged and counted.
func TestSenderGivesUp(t *testing.T) {
	rcv := newReceiver(t, http.StatusServiceUnavailable)
	var logs strings.Builder
	var outcomes []string
	s := NewSender(SenderConfig{Secret: secret, Timeout: time.Second, GiveUpAfter: time.Hour,
		Observe: func(o string) { outcomes = append(outcomes, o) }, Log: zerolog.New(&logs)})
	err := s.ProcessTask(context.Background(), task(t, Delivery{URL: rcv.URL, Status: batching.Status{ID: "r2", State: batching.Failed},
		EndedAt: time.Now().Add(-61 * time.Minute).UnixMilli()}))
	if !errors.Is(err, asynq.SkipRetry) || len(outcomes) != 1 || outcomes[0] != "failed" || !strings.Contains(logs.String(), "giving up") {
		t.Errorf("err %v, outcomes %v, logs %s", err, outcomes, logs.String())
	}
}

// TestSenderRefuses: no secret, nothing sent (an error naming the
// variable, retried); an address the allow-list refuses at dial time (a
// listed name that resolves to loopback) is not sent and not retried; a
// redirect is not followed.
func TestSenderRefuses(t *testing.T) {
	rcv := newReceiver(t)
	ctx := context.Background()
	unsigned := NewSender(SenderConfig{Timeout: time.Second, GiveUpAfter: time.Hour, Log: zerolog.Nop()})
	err := unsigned.ProcessTask(ctx, task(t, Delivery{URL: rcv.URL, EndedAt: time.Now().UnixMilli()}))
	if err == nil || errors.Is(err, asynq.SkipRetry) || !strings.Contains(err.Error(), "PURGE_CALLBACK_SECRET") {
		t.Errorf("without a secret: %v", err)
	}

	port := rcv.URL[strings.LastIndex(rcv.URL, ":"):]
	named := NewSender(SenderConfig{Secret: secret, Allow: allow(t, "localhost"), Timeout: time.Second, GiveUpAfter: time.Hour, Log: zerolog.Nop()})
	err = named.ProcessTask(ctx, task(t, Delivery{URL: "http://localhost" + port + "/", EndedAt: time.Now().UnixMilli()}))
	if !errors.Is(err, asynq.SkipRetry) || !strings.Contains(err.Error(), "internal") {
		t.Errorf("localhost, listed by name, resolving to loopback: %v", err)
	}
	cidr := NewSender(SenderConfig{Secret: secret, Allow: allow(t, "10.0.0.0/8"), Timeout: time.Second, GiveUpAfter: time.Hour, Log: zerolog.Nop()})
	err = cidr.ProcessTask(ctx, task(t, Delivery{URL: "http://localhost" + port + "/", EndedAt: time.Now().UnixMilli()}))
	if !errors.Is(err, asynq.SkipRetry) || !strings.Contains(err.Error(), "in no CIDR") {
		t.Errorf("a name resolving outside the CIDRs: %v", err)
	}
	if n := len(rcv.deliveries()); n != 0 {
		t.Fatalf("%d deliveries reached the receiver", n)
	}
	loop := NewSender(SenderConfig{Secret: secret, Allow: allow(t, "localhost,127.0.0.0/8"), Timeout: time.Second, GiveUpAfter: time.Hour, Log: zerolog.Nop()})
	if err := loop.ProcessTask(ctx, task(t, Delivery{URL: "http://localhost" + port + "/", EndedAt: time.Now().UnixMilli()})); err != nil {
		t.Errorf("loopback allowed by its CIDR: %v", err)
	}

	target := newReceiver(t)
	redirect := httptest.NewServer(http.RedirectHandler(target.URL, http.StatusTemporaryRedirect))
	defer redirect.Close()
	err = loop.ProcessTask(ctx, task(t, Delivery{URL: redirect.URL, EndedAt: time.Now().UnixMilli()}))
	if err == nil || !strings.Contains(err.Error(), "307") || len(target.deliveries()) != 0 {
		t.Errorf("a redirect: %v, %d deliveries at its target", err, len(target.deliveries()))
	}
}
