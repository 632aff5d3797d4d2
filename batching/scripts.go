package batching

import (
	"embed"
	"strings"

	"github.com/redis/go-redis/v9"
)

// The outbox's Lua scripts live in lua/: one file per script, with a header
// naming its KEYS, ARGV and what it returns, and four library files the
// scripts start with (clock: the server's time; sources: a source-list
// token; credit: crediting requests; lanes: the lane layout).
//
//go:embed lua/*.lua
var luaFiles embed.FS

// script joins files of lua/ (libraries first) into one script.
func script(files ...string) *redis.Script {
	var b strings.Builder
	for _, f := range files {
		src, err := luaFiles.ReadFile("lua/" + f + ".lua")
		if err != nil {
			panic(err) // a file named here is missing from the embedded set
		}
		b.Write(src)
		b.WriteByte('\n')
	}
	return redis.NewScript(strings.ReplaceAll(b.String(), "$REQUEST_IDLE_MS", requestIdleMs))
}

// One Go name per script.
var (
	// admitCmd admits a slice of a request's items (lua/admit.lua).
	admitCmd = script("clock", "sources", "credit", "lanes", "admit")
	// popCmd takes a lane's next chunk if the rules allow (lua/pop.lua).
	popCmd = script("clock", "lanes", "pop")
	// readyCmd lists the lanes to look at now (lua/ready.lua).
	readyCmd = script("clock", "ready")
	// holdCmd defers a lane while the limits are busy (lua/hold.lua).
	holdCmd = script("clock", "hold")
	// strandedCmd lists old in-flight records (lua/stranded.lua).
	strandedCmd = script("clock", "stranded")
	// laneStatsCmd reports lanes' depth and age (lua/lane_stats.lua).
	laneStatsCmd = script("clock", "lanes", "lane_stats")
	// recordCmd records a call's outcome once (lua/record.lua).
	recordCmd = script("clock", "sources", "credit", "record")
	// markSentCmd marks an attempt's send (lua/mark_sent.lua).
	markSentCmd = script("mark_sent")
	// rememberCmd keeps an accepted call in the history (lua/remember.lua).
	rememberCmd = script("clock", "remember")
	// recentCmd reads the newest history entries (lua/recent.lua).
	recentCmd = script("recent")
	// retryCmd re-admits dead-letter entries (lua/retry.lua).
	retryCmd = script("clock", "sources", "lanes", "retry")
	// finishedCmd fails a request as a whole (lua/finished.lua).
	finishedCmd = script("clock", "sources", "credit", "finished")
)
