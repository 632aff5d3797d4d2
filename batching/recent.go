package batching

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/purgeq/purgeq/internal/keyspace"
)

// What the status page shows beside the outbox: the calls sent per minute
// (CallLog) and the newest calls of the purge history (History.Recent).

// CallLog counts the calls each account sends to Cloudflare, per minute,
// for the last hour's chart: one small hash per account and hour (field:
// the Unix minute), which expires callLogKeep after its hour ends. Counts
// are shared by every worker of the deployment.
type CallLog struct {
	rdb redis.UniversalClient
}

// NewCallLog returns the call log on rdb.
func NewCallLog(rdb redis.UniversalClient) *CallLog { return &CallLog{rdb: rdb} }

// callLogKeep is how long an hour's counts outlive the hour: the chart
// reaches an hour back.
const callLogKeep = 2 * time.Hour

// Count adds one call of account sent at at.
func (l *CallLog) Count(ctx context.Context, account string, at time.Time) error {
	minute := at.Unix() / 60
	hour := minute / 60
	key := keyspace.Calls(account, hour)
	_, err := l.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HIncrBy(ctx, key, strconv.FormatInt(minute, 10), 1)
		p.ExpireAt(ctx, key, time.Unix((hour+1)*3600, 0).Add(callLogKeep))
		return nil
	})
	if err != nil {
		return fmt.Errorf("counting a call of account %s: %w", account, err)
	}
	return nil
}

// PerMinute returns account's calls in each of the n minutes starting with
// since's, oldest first (0 for a minute without calls, or past the last
// two hours).
func (l *CallLog) PerMinute(ctx context.Context, account string, since time.Time, n int) ([]int, error) {
	first := since.Unix() / 60
	var cmds []*redis.SliceCmd
	if _, err := l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for m := first; m < first+int64(n); {
			hour := m / 60
			var fields []string
			for ; m < first+int64(n) && m/60 == hour; m++ {
				fields = append(fields, strconv.FormatInt(m, 10))
			}
			cmds = append(cmds, p.HMGet(ctx, keyspace.Calls(account, hour), fields...))
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("reading the calls of account %s: %w", account, err)
	}
	out := make([]int, 0, n)
	for _, c := range cmds {
		for _, v := range c.Val() {
			s, _ := v.(string)
			count, _ := strconv.Atoi(s) // absent: 0
			out = append(out, count)
		}
	}
	return out, nil
}

// recentMax bounds what Recent reads at once.
const recentMax = 1000

// Recent lists the newest n (at most recentMax) calls of the purge
// history, newest first. An entry's Zone is the zone's id (Find gives
// names).
func (h *History) Recent(ctx context.Context, n int) ([]Entry, error) {
	if n <= 0 {
		return nil, nil
	}
	vals, err := recentCmd.Run(ctx, h.rdb, []string{keyspace.HistorySeq, keyspace.History}, min(n, recentMax)).Slice()
	if err != nil {
		return nil, fmt.Errorf("reading the newest history entries: %w", err)
	}
	out := make([]Entry, 0, len(vals))
	for _, v := range vals {
		s, ok := v.(string)
		if !ok {
			continue // past the retention meanwhile
		}
		var e Entry
		if err := json.Unmarshal([]byte(s), &e); err != nil {
			return nil, fmt.Errorf("history entry %s: %w", s, err)
		}
		out = append(out, e)
	}
	return out, nil
}
