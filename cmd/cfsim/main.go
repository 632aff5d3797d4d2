// Command cfsim runs the Cloudflare purge API simulator (purge/cftest) as a
// standalone process, for benchmarks, demos and out-of-process tests. Every
// call is printed as one JSON line on stdout; GET /__sim/stats and
// GET /__sim/calls answer the running totals.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/purgeq/purgeq/limits/rate"
	"github.com/purgeq/purgeq/purge"
	"github.com/purgeq/purgeq/purge/cftest"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "cfsim:", err)
		os.Exit(2)
	}
}

func run() error {
	addr := flag.String("addr", "127.0.0.1:8787", "listen address")
	token := flag.String("token", "dev-token", "API token the simulator accepts")
	zones := flag.String("zones", "", "comma-separated zone ids that exist (required)")
	planName := flag.String("plan", "free", "plan: free, pro, business or enterprise")
	global := flag.String("global-limit", "1200/5m", "global window per token, N/DURATION")
	block := flag.Duration("block", 5*time.Minute, "how long a token is blocked after exceeding the window")
	latency := flag.Duration("latency", 0, "delay added to every answer")
	flag.Parse()

	if *zones == "" {
		return fmt.Errorf("-zones is required")
	}
	plan, err := purge.PlanByName(*planName)
	if err != nil {
		return err
	}
	limit, err := rate.Parse(*global)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetEscapeHTML(false)
	sim := cftest.NewUnstartedServer(cftest.Config{
		Token: *token, Zones: strings.Split(*zones, ","), Plan: plan,
		GlobalLimit: limit, Block: *block, Latency: *latency,
		OnCall: func(c cftest.Call) { enc.Encode(c) },
	})
	if err := sim.StartOn(*addr); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "cfsim: Cloudflare simulator at %s (plan %s, global %s)\n", sim.URL, plan.Name, limit)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	sim.Close()
	return nil
}
