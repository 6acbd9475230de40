package nginxcache

import (
	"time"

	"github.com/doorman/doorman/decide"
)

// Margin is how much longer than nginx's copy a verdict is remembered: nginx
// reads its clock once per event loop turn, and may run on a clock slightly
// behind doorman's. Remembering longer only costs a refresh that was not
// needed.
const Margin = time.Second

// Expiry is when nginx may keep a verdict answered at now, for the header
// X-Accel-Expires: "@Last" (absolute, so a copy stored late cannot outlive
// it). nginx serves the copy while its clock's whole second is at most Last,
// that is until Last+1 s.
type Expiry struct {
	Last int64     // unix seconds
	Gone time.Time // when nginx's copy is expired everywhere: Last+1 s plus Margin
}

// ExpiryOf returns how long nginx may keep verdict v answered at now: at
// most ttl, and for a ban never past its end. ok is false when v must not be
// kept: no-client-ip, or less than a whole second boundary left.
func ExpiryOf(v decide.Verdict, now time.Time, ttl time.Duration) (e Expiry, ok bool) {
	if v.Reason == decide.NoClientIP {
		return Expiry{}, false
	}
	end := now.Add(ttl)
	if v.Reason == decide.Banned && v.Until.Before(end) {
		end = v.Until
	}
	last := end.Unix() - 1 // end rounded down to its second, minus the second nginx serves in full
	if time.Unix(last+1, 0).Compare(now) <= 0 {
		return Expiry{}, false
	}
	return Expiry{Last: last, Gone: time.Unix(last+1, 0).Add(Margin)}, true
}
