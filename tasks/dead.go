package tasks

import (
	"context"
	"errors"
	"time"

	"github.com/hibiken/asynq"
)

// ArchiveDead mirrors a dead-letter entry into asynq's archive (queue
// purge-dead) so that the UI shows it. The archive is only a view: asynq
// trims it past 10,000 tasks, while the dead-letter store keeps every entry.
func ArchiveDead(ctx context.Context, ac *asynq.Client, insp *asynq.Inspector, id string, payload []byte) error {
	// Scheduled far ahead, so that no server runs it before it is archived.
	_, err := ac.EnqueueContext(ctx, asynq.NewTask(TypeDead, payload), asynq.TaskID(id), asynq.Queue(QueueDead),
		asynq.ProcessIn(100*365*24*time.Hour), asynq.MaxRetry(0))
	if errors.Is(err, asynq.ErrTaskIDConflict) {
		// mirrored before: archived already, or still scheduled
		return archive(insp, id)
	}
	if err != nil {
		return err
	}
	return archive(insp, id)
}

// archive archives a mirror; one archived already (the first attempt ran
// and its reply was lost) is fine.
func archive(insp *asynq.Inspector, id string) error {
	err := insp.ArchiveTask(QueueDead, id)
	if err == nil {
		return nil
	}
	if info, ierr := insp.GetTaskInfo(QueueDead, id); ierr == nil && info.State == asynq.TaskStateArchived {
		return nil
	}
	return err
}

// ForgetDead removes the archived mirrors of entries that were retried or
// dropped; mirrors already trimmed by asynq are skipped.
func ForgetDead(insp *asynq.Inspector, ids []string) {
	for _, id := range ids {
		insp.DeleteTask(QueueDead, id)
	}
}
