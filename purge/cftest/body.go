package cftest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/purgeq/purgeq/purge"
)

// decodeBody reads a purge body the way Cloudflare does. The batch holds
// what could be read, so that even a rejected call is recorded.
func decodeBody(r *http.Request) (purge.Batch, *answer) {
	data, err := io.ReadAll(io.LimitReader(r.Body, 8<<20))
	if err != nil {
		return purge.Batch{}, badRequest(purge.CodeMissingField, "could not read the request body")
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		return purge.Batch{}, badRequest(purge.CodeMissingField, "Decoding Error: the request body is not a JSON object")
	}
	if raw, ok := fields["purge_everything"]; ok {
		if len(fields) > 1 {
			return purge.Batch{Kind: purge.Everything}, badRequest(purge.CodeEverythingMixed, "purge_everything must be the only field in the request")
		}
		var v bool
		if json.Unmarshal(raw, &v) != nil || !v {
			return purge.Batch{Kind: purge.Everything}, badRequest(purge.CodeEverythingFalse, "purge_everything must be true")
		}
		return purge.Batch{Kind: purge.Everything, Items: []string{purge.EverythingKey}}, nil
	}
	var batch purge.Batch
	for _, k := range []purge.Kind{purge.Files, purge.Tags, purge.Hosts, purge.Prefixes} {
		raw, ok := fields[string(k)]
		if !ok {
			continue
		}
		if batch.Kind != "" {
			return batch, badRequest(purge.CodeMissingField, "only one of files, tags, hosts or prefixes per request")
		}
		batch.Kind = k
		var list []json.RawMessage
		if err := json.Unmarshal(raw, &list); err != nil {
			return batch, badRequest(purge.CodeNotArrays, string(k)+" must be an array")
		}
		for _, item := range list {
			key, err := decodeItem(k, item)
			if err != nil {
				return batch, badRequest(purge.CodeNotArrays, err.Error())
			}
			batch.Items = append(batch.Items, key)
		}
	}
	if batch.Kind == "" {
		return batch, badRequest(purge.CodeMissingField, "Missing one of files, tags, hosts, prefixes or purge_everything")
	}
	return batch, nil
}

// decodeItem returns the item as the project keys it: a string as sent, or
// a {url, headers} object re-encoded canonically.
func decodeItem(k purge.Kind, raw json.RawMessage) (string, error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	if k != purge.Files {
		return "", fmt.Errorf("%s items must be strings", k)
	}
	var f purge.File
	if err := json.Unmarshal(raw, &f); err != nil || f.URL == "" {
		return "", fmt.Errorf("files items must be strings or {url, headers} objects")
	}
	return purge.NormalizeFile(f)
}

// checkItems applies the plan's caps and the per-item rules. It
// deliberately does not call purge.Normalize: the simulator checks the
// client, it does not share its mistakes.
func checkItems(plan purge.Plan, b purge.Batch) (answer, bool) {
	n := len(b.Items)
	switch {
	case b.Kind == purge.Files && n > plan.MaxFiles:
		return *badRequest(purge.CodeTooManyFiles, fmt.Sprintf("Only %d files can be purged at a time; got %d", plan.MaxFiles, n)), false
	case b.Kind == purge.Tags && n > plan.MaxFlex:
		return *badRequest(purge.CodeTooManyTags, fmt.Sprintf("Only %d tags can be purged at a time; got %d", plan.MaxFlex, n)), false
	case (b.Kind == purge.Hosts || b.Kind == purge.Prefixes) && n > plan.MaxFlex:
		return *badRequest(purge.CodeTooManyHosts, fmt.Sprintf("Only %d %s can be purged at a time; got %d", plan.MaxFlex, b.Kind, n)), false
	case n == 0:
		return *badRequest(purge.CodeMissingField, "no items to purge"), false
	}
	for _, key := range b.Items {
		switch b.Kind {
		case purge.Files:
			u, err := url.Parse(purge.ItemURL(key))
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return *badRequest(purge.CodeUnableToPurge, "Unable to purge "+purge.ItemURL(key)), false
			}
		case purge.Tags:
			if len(key) > 1024 {
				return *badRequest(purge.CodeTagTooLong, "Tag exceeds 1024 characters: "+key[:32]), false
			}
		case purge.Hosts:
			if len(key) > 200 {
				return *badRequest(purge.CodeHostTooLong, "Host exceeds 200 characters: "+key), false
			}
			if strings.ContainsAny(key, "/: ") {
				return *badRequest(purge.CodeInvalidHost, "Invalid host: "+key), false
			}
		case purge.Prefixes:
			if strings.Contains(key, "://") || strings.ContainsAny(key, "?#") {
				return *badRequest(purge.CodeUnableToPurge, "Unable to purge prefix "+key), false
			}
		}
	}
	return answer{}, true
}

func badRequest(code int, msg string) *answer {
	return &answer{status: http.StatusBadRequest, code: code, message: msg}
}
