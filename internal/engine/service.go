package engine

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"github.com/doorman/doorman/decide"
)

// MaxManualBan is the longest manual ban any listener makes (the API, the
// status page): ten years, far from the end of the nanosecond clock the ban
// table keeps (year 2262). Cluster mode refuses a longer one learned from
// Redis, so no writer there can make a ban doorman's own inputs cannot.
const MaxManualBan = 10 * 365 * 24 * time.Hour

// Service is what the listeners use: decisions, the webhook's failures and
// successes, and the operator's bans. Local is the single-instance
// implementation; cluster.Cluster shares the same state through Redis. The
// changes return their receipt (what the hooks and the backend report).
type Service interface {
	// Decide is the verdict for a at now; it does not allocate.
	Decide(a netip.Addr, now time.Time) decide.Verdict
	// Fail counts a failed login from a; user is the normalised username
	// the failure line names ("" when none was given).
	Fail(ctx context.Context, a netip.Addr, user string, now time.Time) (Failed, error)
	// Succeed forgets the failures of a's unit; it returns the cleaned
	// address and its unit.
	Succeed(ctx context.Context, a netip.Addr, now time.Time) (netip.Addr, netip.Prefix, error)
	Ban(ctx context.Context, p netip.Prefix, d time.Duration, note string, now time.Time) (Banned, error)
	// Unban lifts every ban covering a; Remove lifts exactly the ban held
	// under p. Both return the records lifted, active or expired.
	Unban(ctx context.Context, a netip.Addr, now time.Time) (Lifted, error)
	Remove(ctx context.Context, p netip.Prefix, now time.Time) (Lifted, error)
	// Explain is the verdict for a with its failure count, counting nothing.
	Explain(ctx context.Context, a netip.Addr, now time.Time) Explanation
	// Bans are the bans in force at now, oldest first.
	Bans(now time.Time) []decide.Ban
	Stats(now time.Time) decide.Stats
}

// Explanation is a verdict with what led to it.
type Explanation struct {
	Addr     netip.Addr // cleaned
	Verdict  decide.Verdict
	Failures int // failures of the unit within the window (cluster-wide in cluster mode)
}

// ErrNotSaved says a change is in force in memory but the state file was not
// updated: it would not survive a restart.
var ErrNotSaved = errors.New("in force but not saved to the state file")

// IP is how a ban's subject is written in logs and messages: a single address
// bare, a range as a CIDR.
func IP(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}
