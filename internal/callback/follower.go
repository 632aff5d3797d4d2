package callback

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"time"

	"github.com/hibiken/asynq"
	"github.com/rs/zerolog"

	"github.com/purgeq/purgeq/batching"
	"github.com/purgeq/purgeq/tasks"
)

// Follower turns the ends the outbox's scripts note (batching.Requests'
// Endings: the request's counters and the note change in one script) into
// asynq tasks: the request's repeat, scheduled RepeatAfter after it ended,
// and its callback's delivery. Each task's id derives from the request
// (and, for a callback, the end's state), and an end is removed from the
// list only once its tasks are queued: a worker that crashes in between
// queues them again, which asynq refuses as duplicates, so an end is
// followed up once, whatever crashes. Every worker runs one; they may
// work on the same end at once, with the same result.
type Follower struct {
	Requests *batching.Requests
	// Client schedules repeats; Asynq queues callbacks.
	Client *tasks.Client
	Asynq  *asynq.Client
	// Retention keeps a delivered callback's task, and so its id reserved.
	Retention time.Duration
	// Tick is how often the list is looked at.
	Tick time.Duration
	Log  zerolog.Logger
}

// Run follows ends up until ctx ends.
func (f *Follower) Run(ctx context.Context) {
	t := time.NewTicker(f.Tick)
	defer t.Stop()
	var logged time.Time
	for {
		// at most one warning in 10 s (a Redis outage fails every step)
		if err := f.Step(ctx); err != nil && ctx.Err() == nil && time.Since(logged) > 10*time.Second {
			f.Log.Warn().Err(err).Msg("following up ended requests (retried)")
			logged = time.Now()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Step follows up the ends listed now; an end that fails stays listed
// for the next step.
func (f *Follower) Step(ctx context.Context) error {
	ends, err := f.Requests.Endings(ctx, 100)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ends {
		if err := f.follow(ctx, e); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := f.Requests.Followed(ctx, e); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// follow queues an end's repeat (first, so that the callback's body names
// it) and its callback.
func (f *Follower) follow(ctx context.Context, e batching.Ending) error {
	fu, err := f.Requests.Followups(ctx, e.ID)
	if errors.Is(err, batching.ErrUnknownRequest) {
		f.Log.Error().Str("request", e.ID).Msg("an ended request's follow-ups expired before a worker saw them: no repeat, no callback")
		return nil
	}
	if err != nil {
		return err
	}
	if e.State == batching.Done && fu.RepeatAfter > 0 && !fu.Repeated {
		if err := f.repeat(ctx, e.ID, fu); err != nil {
			return err
		}
	}
	if fu.CallbackURL == "" {
		return nil
	}
	st, err := f.Requests.Admitted(ctx, e.ID)
	if errors.Is(err, batching.ErrUnknownRequest) {
		f.Log.Error().Str("request", e.ID).Msg("an ended request's status expired before a worker saw it: no callback")
		return nil
	}
	if err != nil {
		return err
	}
	payload, err := json.Marshal(Delivery{URL: fu.CallbackURL, Status: st, EndedAt: fu.Finished.UnixMilli()})
	if err != nil {
		return err
	}
	// The end's state is part of the id: a request that ends again (its
	// dead items retried and purged) is a new end, told anew.
	_, err = f.Asynq.EnqueueContext(ctx, asynq.NewTask(tasks.TypeCallback, payload), asynq.TaskID("callback:"+e.ID+":"+string(e.State)),
		asynq.Queue(tasks.QueueCallbacks), asynq.MaxRetry(math.MaxInt32), asynq.Retention(f.Retention), asynq.Timeout(time.Minute))
	if errors.Is(err, asynq.ErrTaskIDConflict) {
		return nil
	}
	return err
}

// repeat schedules the request that purges e's items again.
func (f *Follower) repeat(ctx context.Context, id string, fu batching.Followups) error {
	rep, err := f.Requests.RepeatPayload(ctx, id)
	if errors.Is(err, batching.ErrUnknownRequest) {
		f.Log.Error().Err(err).Str("request", id).Msg("no repeat")
		return nil
	}
	if err != nil {
		return err
	}
	at := fu.Finished.Add(fu.RepeatAfter)
	rep.NotBefore, rep.EnqueuedAt = at.UnixMilli(), time.Now().UnixMilli()
	if _, err := f.Client.EnqueueBuilt(ctx, rep); err != nil {
		return err
	}
	f.Log.Info().Str("request", id).Str("repeat", rep.ID).Time("at", at).Msg("repeat scheduled")
	return f.Requests.Repeated(ctx, id, rep.ID, at)
}
