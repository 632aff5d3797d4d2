package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/hibiken/asynq"

	"github.com/purgeq/purgeq/tasks"
)

const dlqUsage = `Usage:
  enqueue dlq list [--zone Z] [--json]   every dead-letter entry, oldest first
  enqueue dlq retry ID… | --all          send the entries' items again, with a fresh retry budget
  enqueue dlq drop ID… | --all           delete entries for good

Flags: --zone Z (list: only this zone), --json (list: print JSON),
--all (retry, drop: every entry), --help, --version.`

// dlq is the dead-letter queue's operator interface.
func dlq(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError("%s", dlqUsage)
	}
	usage := func(w io.Writer) { fmt.Fprintln(w, dlqUsage) }
	switch args[0] {
	case "list", "retry", "drop":
	default:
		if help, version := helpOrVersion(args[:1]); help || version {
			return answer(help, stdout, usage)
		}
		return usageError("dlq: unknown command %q\n%s", args[0], dlqUsage)
	}
	fs := flag.NewFlagSet("dlq "+args[0], flag.ContinueOnError)
	zone := fs.String("zone", "", "only this zone (name or id)")
	asJSON := fs.Bool("json", false, "print JSON")
	everything := fs.Bool("all", false, "every entry")
	if err := parseArgs(fs, args[1:], usage, stdout, stderr); err != nil {
		return err
	}
	ids := fs.Args()
	if args[0] != "list" && *everything == (len(ids) > 0) {
		return usageError("dlq %s: name entry ids or --all (not both)", args[0])
	}

	c, err := open(ctx)
	if err != nil {
		return err
	}
	defer c.close()

	switch args[0] {
	case "list":
		zoneID := ""
		if *zone != "" {
			z, ok := c.zs().Lookup(*zone)
			if !ok {
				return usageError("--zone %q is not one of the configured zones (%s)", *zone, c.zs())
			}
			zoneID = z.ID
		}
		return c.listDead(ctx, zoneID, *asJSON, stdout)
	case "retry", "drop":
		if *everything {
			if ids, err = c.dead.IDs(ctx); err != nil {
				return err
			}
		}
		op, verb := c.dead.Retry, "retried"
		if args[0] == "drop" {
			op, verb = c.dead.Drop, "dropped"
		}
		n, err := op(ctx, ids)
		tasks.ForgetDead(asynq.NewInspectorFromRedisClient(c.rdb), ids)
		if err != nil {
			return fmt.Errorf("%d of %d entries %s before: %w", n, len(ids), verb, err)
		}
		fmt.Fprintf(stderr, "enqueue: %d entr%s %s\n", n, plural(n, "y", "ies"), verb)
		if n < len(ids) && !*everything {
			return fmt.Errorf("%d of the ids named no entry (already retried or dropped?)", len(ids)-n)
		}
		return nil
	}
	return nil // not reached: args[0] was checked above
}

func (c *conn) listDead(ctx context.Context, zoneID string, asJSON bool, stdout io.Writer) error {
	entries, err := c.dead.Entries(ctx, zoneID)
	if err != nil {
		return err
	}
	if asJSON {
		if entries == nil {
			entries = entries[:0]
		}
		return json.NewEncoder(stdout).Encode(entries)
	}
	tw := tabwriter.NewWriter(stdout, 1, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tZONE\tKIND\tITEM\tATTEMPTS\tLAST FAILED\tREASON")
	names := map[string]string{}
	for _, z := range c.zs() {
		names[z.ID] = z.Name
	}
	for _, e := range entries {
		zone := names[e.Zone]
		if zone == "" {
			zone = e.Zone
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", e.ID, zone, e.Kind, truncate(e.Item, 80), e.Attempts,
			time.UnixMilli(e.LastFailed).UTC().Format(time.RFC3339), truncate(e.Reason, 100))
	}
	return tw.Flush()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
