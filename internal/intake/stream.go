package intake

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/tasks"
)

// streamChunk is how many lines go into one staged chunk.
const streamChunk = 1000

// stream serves POST /v1/purge/stream: one item a line in the body (of
// the query's kind, default files; blank lines and # comments skipped),
// staged in chunks as it arrives and queued as one request, so that a
// deploy's 200,000 URLs go through the intake with flat memory. The query
// also takes zone, soft, source, priority, callback_url, delay,
// repeat_after and skip_invalid; the key comes in the
// Idempotency-Key header. Every bad line is named by its number and, unless
// skip_invalid, nothing is queued.
func (s *server) stream(w http.ResponseWriter, r *http.Request) {
	if s.Streams == nil {
		writeError(w, http.StatusNotImplemented, "streamed requests are not served here", nil)
		return
	}
	q := r.URL.Query()
	kind := purge.Kind(q.Get("kind"))
	if kind == "" {
		kind = purge.Files
	}
	if !slices.Contains(purge.Kinds[:4], kind) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("kind %q is none of files, tags, hosts, prefixes", kind), nil)
		return
	}
	key, err := headerKey(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	pr := tasks.PurgeRequest{IdempotencyKey: key, Source: q.Get("source"), Priority: q.Get("priority"), CallbackURL: q.Get("callback_url")}
	attribute(r.Context(), &pr)
	if err := tasks.CheckPriority(pr.Priority); err != nil {
		writeError(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	if pr.Delay, err = duration("delay", q.Get("delay")); err == nil {
		pr.RepeatAfter, err = duration("repeat_after", q.Get("repeat_after"))
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	st := s.Streams(q.Get("soft") == "true", pr.IdempotencyKey)
	st.Attribute(pr.Producer, pr.Source)
	st.Prioritise(pr.Priority)
	var ie *purge.InvalidError
	if err := st.Follow(pr); errors.As(err, &ie) {
		writeError(w, http.StatusBadRequest, "nothing queued", ie.Items)
		return
	}
	rc, status, bad, err := s.stage(r.Context(), st, r, kind, q.Get("zone"), q.Get("skip_invalid") == "true")
	if err != nil {
		st.Abort(context.WithoutCancel(r.Context()))
		retryAfter(r.Context(), w, status)
		writeError(w, status, err.Error(), bad)
		return
	}
	note(r.Context(), func(f *logFields) { f.request, f.items, f.duplicate = rc.ID, rc.Items, rc.Duplicate })
	purge.WriteJSON(w, http.StatusAccepted, struct {
		tasks.Receipt
		Skipped []purge.Invalid `json:"skipped,omitempty"`
	}{rc, bad})
}

// stage reads the body's lines into the stream and commits it. It returns
// the receipt, or the status and error to answer (with the bad lines).
func (s *server) stage(ctx context.Context, st *tasks.Stream, r *http.Request, kind purge.Kind, zone string, skipInvalid bool) (tasks.Receipt, int, []purge.Invalid, error) {
	p := producerOf(ctx)
	var bad []purge.Invalid
	var items []string
	var lines []int
	// flush validates the lines read since the last flush, names the bad
	// ones, and stages the rest (unless nothing will be queued anyway).
	flush := func() (int, error) {
		defer func() { items, lines = items[:0], lines[:0] }()
		for len(items) > 0 {
			req, err := s.Queue.Build(tasks.ItemsRequest(kind, zone, items))
			var ie *purge.InvalidError
			if errors.As(err, &ie) {
				items, lines = dropInvalid(items, lines, ie.Items, &bad)
				continue
			}
			if err != nil {
				return http.StatusInternalServerError, err
			}
			if a := s.permitted(p, req); a != nil {
				return a.status, a.err
			}
			if len(bad) > 0 && !skipInvalid {
				return 0, nil // nothing will be queued: only look for bad lines
			}
			if err := st.AddBuilt(ctx, req); err != nil {
				return http.StatusServiceUnavailable, errors.New("the queue cannot take requests now (nothing was queued); retry later")
			}
			return 0, nil
		}
		return 0, nil
	}
	sc := bufio.NewScanner(http.MaxBytesReader(nil, r.Body, 1<<30))
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		items, lines = append(items, line), append(lines, n)
		if len(items) == streamChunk {
			if status, err := flush(); err != nil {
				return tasks.Receipt{}, status, nil, err
			}
		}
	}
	if err := sc.Err(); err != nil {
		return tasks.Receipt{}, http.StatusBadRequest, nil, fmt.Errorf("reading line %d: %v (nothing was queued)", n+1, err)
	}
	if status, err := flush(); err != nil {
		return tasks.Receipt{}, status, nil, err
	}
	if len(bad) > 0 && !skipInvalid {
		return tasks.Receipt{}, http.StatusBadRequest, bad, fmt.Errorf("%d invalid line(s), nothing queued (skip_invalid=true queues the rest)", len(bad))
	}
	total := st.Items()
	if total == 0 {
		return tasks.Receipt{}, http.StatusBadRequest, bad, errors.New("the request names nothing to purge")
	}
	if a, wait := s.withinRate(ctx, p, total); a != nil {
		note(ctx, func(f *logFields) { f.retryAfter = wait })
		return tasks.Receipt{}, a.status, nil, a.err
	}
	rc, err := st.Commit(ctx)
	switch {
	case errors.Is(err, tasks.ErrNotReplicated) || errors.Is(err, tasks.ErrUncertain):
		return tasks.Receipt{}, http.StatusServiceUnavailable, nil, fmt.Errorf("%v; retry with the same Idempotency-Key to be sure", err)
	case err != nil:
		return tasks.Receipt{}, http.StatusServiceUnavailable, nil, errors.New("the queue cannot take requests now (nothing was queued); retry later")
	}
	return rc, 0, bad, nil
}

// dropInvalid takes the invalid items out, naming each with its line.
func dropInvalid(items []string, lines []int, invalid []purge.Invalid, bad *[]purge.Invalid) ([]string, []int) {
	isBad := map[string]string{}
	for _, inv := range invalid {
		isBad[inv.Item] = inv.Reason
	}
	var keep []string
	var keepLines []int
	for i, it := range items {
		if reason, ok := isBad[it]; ok {
			*bad = append(*bad, purge.Invalid{Item: "line " + strconv.Itoa(lines[i]) + ": " + it, Reason: reason})
			continue
		}
		keep, keepLines = append(keep, it), append(keepLines, lines[i])
	}
	if len(keep) == len(items) { // nothing matched: give up on the chunk rather than loop
		for _, inv := range invalid {
			*bad = append(*bad, inv)
		}
		return nil, nil
	}
	return keep, keepLines
}
