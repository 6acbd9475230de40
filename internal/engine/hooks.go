package engine

import (
	"context"
	"time"
)

// A Hook acts on each committed change (refreshing proxy caches, kernel
// bans …) and says what it did: commit merges the reports it returns into
// the change's receipt, which the API shows beside its answer. It runs after
// the change is in force, written and sent to the observers, in the
// goroutine that made it, before the call that made it answers; ctx is that
// call's (a background context for changes learned from the cluster, which
// no caller waits for: a hook should hand those off). Register hooks before
// serving.
//
// Adding a hook is a type with this one method and a name for its report
// (a Report constant), registered in main.go with Local.AddHook.
type Hook interface {
	Committed(ctx context.Context, ch Change, now time.Time) Receipt
}

// AddHook registers h.
func (l *Local) AddHook(h Hook) { l.hooks = append(l.hooks, h) }
