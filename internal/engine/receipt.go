package engine

import (
	"time"

	"github.com/doorman/doorman/decide"
)

// Receipt is what a change reports beyond memory and the state file: what
// the backend and the hooks did with it, each a named yes or no. The API
// shows each report as a JSON boolean beside its answer ("shared",
// "proxies_refreshed", …); an answer without a body (204) becomes 200 with
// the reports when one of them is false.
type Receipt struct {
	Reports []Report
}

// Report is one outcome of a change: Name is its JSON field.
type Report struct {
	Name string
	OK   bool
}

// Report records name's outcome; a name reported twice is true only if both
// were.
func (r *Receipt) Report(name string, ok bool) {
	for i := range r.Reports {
		if r.Reports[i].Name == name {
			r.Reports[i].OK = r.Reports[i].OK && ok
			return
		}
	}
	r.Reports = append(r.Reports, Report{Name: name, OK: ok})
}

// Merge adds o's reports to r.
func (r *Receipt) Merge(o Receipt) {
	for _, x := range o.Reports {
		r.Report(x.Name, x.OK)
	}
}

// Failed reports whether any report is false.
func (r Receipt) Failed() bool {
	for _, x := range r.Reports {
		if !x.OK {
			return true
		}
	}
	return false
}

// Reports names.
const (
	// ReportShared: the change reached the other doormen (cluster mode);
	// false while Redis is unreachable: it is queued and shared on reconnect.
	ReportShared = "shared"
)

// Failed is what Local.Fail did: the failure's result and its receipt.
type Failed struct {
	decide.FailResult
	Receipt
}

// Banned is what Local.Ban did: the ban in force and its receipt.
type Banned struct {
	decide.Ban
	Receipt
}

// Lifted is what Local.Unban and Local.Remove did: the records lifted,
// active or expired (none: nothing was held), and the receipt.
type Lifted struct {
	Bans []decide.Ban
	Receipt
}

// Active are the lifted bans that were in force at now: an unban also
// forgets expired records.
func (x Lifted) Active(now time.Time) []decide.Ban {
	var active []decide.Ban
	for _, b := range x.Bans {
		if b.Active(now) {
			active = append(active, b)
		}
	}
	return active
}

// Unlocked is what Accounts.Unlock did.
type Unlocked struct {
	Lock  decide.Lock // the lock forgotten (possibly ended)
	Found bool        // the account was tracked
	Receipt
}
