package gate

import (
	"context"
	"errors"
	"net/netip"
	"time"
)

// failed counts a refused sign-in: a failure of the address a, as the
// webhook's (bans, ranges), and of the account name when there is one
// (locks). It returns ErrWrong, or the write error joined to it.
func (g *Gate) failed(ctx context.Context, a netip.Addr, name string, now time.Time) error {
	var errs []error
	if a.IsValid() {
		res, err := g.o.Service.Fail(ctx, a, name, now)
		if err != nil {
			errs = append(errs, err)
		}
		g.o.Log.Info("gate sign-in refused", "ip", res.Addr.String(), "username", name, "failures", res.Failures, "banned", res.InForce())
	}
	if acc := g.o.Accounts; acc != nil && acc.Enabled() && name != "" {
		if _, err := acc.FailAccount(ctx, name, "", now); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(append([]error{ErrWrong}, errs...)...)
}
