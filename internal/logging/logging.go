// Package logging builds the zerolog logger both commands use (level and
// format from PURGE_LOG_LEVEL and PURGE_LOG_FORMAT; console on a terminal,
// JSON otherwise) and adapts it to asynq's Logger.
package logging

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
)

// TimeFormat is the layout of the JSON "time" field: RFC 3339 with
// milliseconds, so that the calls of one second keep their order and spacing.
const TimeFormat = "2006-01-02T15:04:05.000Z07:00"

// zerolog reads TimeFieldFormat when it writes each timestamp; it is set
// once, before any logger exists, for every logger of the process.
func init() { zerolog.TimeFieldFormat = TimeFormat }

// New returns a logger writing to w. format is "json", "console" or empty
// (console when w is a terminal).
func New(w io.Writer, level, format string) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil || level == "" {
		return zerolog.Nop(), fmt.Errorf("PURGE_LOG_LEVEL %q: want debug, info, warn or error", level)
	}
	if format == "" {
		format = "json"
		if f, ok := w.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
			format = "console"
		}
	}
	if format == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger(), nil
}

// Asynq adapts a zerolog logger to asynq.Logger.
type Asynq struct{ L zerolog.Logger }

func (a Asynq) Debug(args ...any) { a.L.Debug().Msg(fmt.Sprint(args...)) }
func (a Asynq) Info(args ...any)  { a.L.Info().Msg(fmt.Sprint(args...)) }
func (a Asynq) Warn(args ...any)  { a.L.Warn().Msg(fmt.Sprint(args...)) }
func (a Asynq) Error(args ...any) { a.L.Error().Msg(fmt.Sprint(args...)) }
func (a Asynq) Fatal(args ...any) { a.L.Fatal().Msg(fmt.Sprint(args...)) }
