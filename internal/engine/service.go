package engine

import (
	"errors"
	"net/netip"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/api"
)

// MaxManualBan is the longest manual ban any listener makes (the API, the
// status page): ten years, far from the end of the nanosecond clock the ban
// table keeps (year 2262). Cluster mode refuses a longer one learned from
// Redis, so no writer there can make a ban doorman's own inputs cannot.
const MaxManualBan = api.MaxManualBan

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
