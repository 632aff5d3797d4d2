package tasks

import (
	"encoding/json"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/purgeq/purgeq/purge"
)

// Describe renders a task's payload for people (the asynq UI): zone, kind,
// item count and the first items. Payloads hold no secrets; this shows
// nothing else of them either.
func Describe(taskType string, payload []byte) string {
	switch taskType {
	case TypeRequest:
		r, err := DecodeRequest(payload)
		if err != nil {
			break
		}
		var parts []string
		zones := make([]string, 0, len(r.Zones))
		for z := range r.Zones {
			zones = append(zones, z)
		}
		sort.Strings(zones)
		for _, z := range zones {
			for _, k := range purge.Kinds {
				if items := r.Zones[z][k]; len(items) > 0 {
					parts = append(parts, fmt.Sprintf("zone %s: %d %s (%s)", z, len(items), k, firstItems(items)))
				}
			}
		}
		soft := ""
		if r.Soft {
			soft = " [soft]"
		}
		origin := ""
		if r.Producer != "" || r.Source != "" {
			origin = fmt.Sprintf(" (from %s", r.Producer)
			if r.Source != "" {
				origin += ", " + r.Source
			}
			origin += ")"
		}
		timing := ""
		if r.NotBefore > 0 {
			timing += " not before " + time.UnixMilli(r.NotBefore).UTC().Format(time.RFC3339)
		}
		if r.RepeatOf != "" {
			timing += " repeat of " + r.RepeatOf
		}
		return fmt.Sprintf("request %s%s%s%s — %d items; %s", r.ID, soft, origin, timing, r.Total(), strings.Join(parts, "; "))
	case TypeCall:
		c, err := DecodeCall(payload)
		if err != nil {
			break
		}
		soft := ""
		if c.Soft {
			soft = " [soft]"
		}
		return fmt.Sprintf("call %s%s — zone %s, %d %s: %s", c.ID, soft, c.Zone, len(c.Items), c.Kind, firstItems(c.Items))
	case TypeCallback:
		var d struct {
			URL    string `json:"url"`
			Status struct {
				ID    string `json:"id"`
				State string `json:"state"`
			} `json:"status"`
		}
		if json.Unmarshal(payload, &d) != nil {
			break
		}
		u, err := url.Parse(d.URL)
		if err != nil {
			break
		}
		// the host only: the path or query may hold the receiver's token
		return fmt.Sprintf("callback — request %s %s, to %s", d.Status.ID, d.Status.State, u.Host)
	case TypeDead:
		var e struct {
			Zone     string     `json:"zone"`
			Kind     purge.Kind `json:"kind"`
			Item     string     `json:"item"`
			Reason   string     `json:"reason"`
			Attempts int        `json:"attempts"`
		}
		if json.Unmarshal(payload, &e) != nil {
			break
		}
		return fmt.Sprintf("dead letter — zone %s, %s %s; %s (%d attempt(s)); run this task to retry it", e.Zone, e.Kind, e.Item, e.Reason, e.Attempts)
	}
	return fmt.Sprintf("%s: unreadable payload (%d bytes)", taskType, len(payload))
}

func firstItems(items []string) string {
	const show = 3
	var b strings.Builder
	for i, it := range items {
		if i == show {
			fmt.Fprintf(&b, ", … %d more", len(items)-show)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(purge.ItemURL(it))
	}
	return b.String()
}
