// Command worker runs the purge queue's worker: it admits queued requests
// into the outbox, coalesces them into full batches, and calls Cloudflare
// under the shared limits. Configuration comes from PURGE_* variables
// (worker --help lists them); --dev runs everything on one machine with
// nothing installed but Go.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/purgeq/purgeq/internal/config"
	"github.com/purgeq/purgeq/internal/dev"
	"github.com/purgeq/purgeq/internal/logging"
	"github.com/purgeq/purgeq/internal/worker"
)

func main() {
	os.Exit(run())
}

func run() int {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	devMode := fs.Bool("dev", false, "development mode: PURGE_REDIS_URL's Redis when set, else an embedded Redis on 127.0.0.1:6379 (a free port when taken); the Cloudflare simulator on 127.0.0.1:8787 (or a free port) when no API token is set; the UI on 127.0.0.1:8080 (or a free port) unless PURGE_HTTP_ADDR is set; example zones. Prints the export PURGE_REDIS_URL=… other terminals need")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: worker [--dev]\n\nRuns the purge queue worker.\n\nFlags:\n")
		fs.PrintDefaults()
		fmt.Fprintf(fs.Output(), "\nEnvironment:\n")
		config.Usage(fs.Output())
	}
	if err := fs.Parse(os.Args[1:]); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if *devMode {
		env, err := dev.Start(ctx, os.Stderr)
		if err != nil {
			fmt.Fprintln(os.Stderr, "worker --dev:", err)
			return 1
		}
		defer env.Close()
	}
	cfg, err := config.Load()
	if err == nil {
		err = cfg.CheckWorker()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "worker: configuration is not valid:\n%v\n\nRun worker --help for every variable, or worker --dev to try it locally.\n", err)
		return 2
	}
	log, err := logging.New(os.Stderr, cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		return 2
	}
	if err := worker.Run(ctx, cfg, log); err != nil {
		log.Error().Err(err).Msg("worker failed")
		return 1
	}
	return 0
}
