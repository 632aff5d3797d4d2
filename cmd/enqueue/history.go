package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/purgeq/purgeq/batching"
	"github.com/purgeq/purgeq/purge"
)

func (c *conn) history(ctx context.Context, item, zone string) ([]batching.Entry, error) {
	return c.hist.Find(ctx, c.zs(), item, zone)
}

// history prints when an item was purged, newest first.
func history(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("history", flag.ContinueOnError)
	zone := fs.String("zone", "", "zone name or id (default: the item's hostname picks it; a tag is looked up in every zone)")
	asJSON := fs.Bool("json", false, "print the entries as a JSON array")
	usage := func(w io.Writer) {
		fmt.Fprint(w, "Usage: enqueue history ITEM [--zone Z] [--json]\n\nWhen ITEM (a URL, tag, host or prefix) was purged, newest first: time, zone,\nkind, Cloudflare's purge id and the requests it served (id, producer, source).\n\nFlags:\n")
		printDefaults(fs, w)
	}
	if err := parseArgs(fs, args, usage, stdout, stderr); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError("usage: enqueue history ITEM [--zone Z] [--json]")
	}
	c, err := openSide(ctx)
	if err != nil {
		return err
	}
	defer c.close()
	entries, err := c.history(ctx, fs.Arg(0), *zone)
	var ie *purge.InvalidError
	if errors.As(err, &ie) {
		return usageError("%v", ie)
	}
	if err != nil {
		return err
	}
	if *asJSON {
		if entries == nil {
			entries = []batching.Entry{}
		}
		return json.NewEncoder(stdout).Encode(entries)
	}
	if len(entries) == 0 {
		fmt.Fprintln(stderr, "enqueue: no purge of", fs.Arg(0), "in the history")
		return nil
	}
	for _, e := range entries {
		soft := ""
		if e.Soft {
			soft = " (soft)"
		}
		if e.Verification != "" {
			soft += "  verified " + string(e.Verification)
		}
		var reqs []string
		for _, r := range e.Requests {
			req := strings.TrimSpace(fmt.Sprintf("%s %s %s", r.ID, r.Producer, r.Source))
			if r.RepeatOf != "" {
				req += " (repeat of " + r.RepeatOf + ")"
			}
			if r.NotBefore != nil {
				req += " (delayed to " + r.NotBefore.Format(time.RFC3339) + ")"
			}
			reqs = append(reqs, req)
		}
		fmt.Fprintf(stdout, "%s  %s %s %s%s  cloudflare id %s  for %s\n", e.At.Format("2006-01-02T15:04:05.000Z07:00"), e.Account, e.Zone, e.Kind, soft, e.CloudflareID, strings.Join(reqs, "; "))
	}
	return nil
}
