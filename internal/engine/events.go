package engine

import (
	"net/netip"
	"time"
)

// Event types.
const (
	EventBan    = "ban"
	EventUnban  = "unban"
	EventLock   = "lock"   // an account locked (Account set, Key zero)
	EventUnlock = "unlock" // an account forgotten by an operator
)

// Event is one change of the ban state, as observers (notifications, the
// event history, proxy caches) see it.
type Event struct {
	Time time.Time
	Type string // EventBan, EventUnban, EventLock, EventUnlock
	// Kind names the change for people and receivers: Type, or KindRangeBan
	// and KindRangeUnban for a ban held under a range rather than a ban
	// unit. Set when the change is committed.
	Kind string
	Key  netip.Prefix
	// Account is the normalised username, for locks.
	Account string
	IP      string // the address or range the change was made for, as logged
	Until   time.Time
	Reason  string // the ban's reason: failures, manual, …
	Count   int
	Source  string // SourceFailures, SourceManual or SourceCluster
}

// OnEvent registers f to be called after each change is in force and
// written. Register before serving; f runs in the goroutine that made the
// change, before the API call that made it answers, so it must be quick or
// hand the event off.
func (l *Local) OnEvent(f func(Event)) { l.events = append(l.events, f) }

func (l *Local) emit(e Event) {
	e.Kind = l.kind(e)
	for _, f := range l.events {
		f(e)
	}
}
