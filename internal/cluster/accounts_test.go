package cluster

import (
	"context"
	"testing"
	"time"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/engine"
)

var accountPolicy = decide.AccountPolicy{MaxFailures: 4, FindTime: time.Hour, LockTime: 15 * time.Minute,
	LockFactor: 2, MaxLockTime: 24 * time.Hour, DeviceMaxFailures: 3}

// startAccounts is a node with accounts on, in cluster mode.
func startAccounts(t *testing.T, url, pfx string) (*node, *Accounts) {
	t.Helper()
	n := startNode(t, nodeOpt{url: url, prefix: pfx, noRun: true})
	acc, _, err := engine.NewAccounts(engine.AccountOptions{Policy: accountPolicy, Max: 1000, TTL: time.Hour, Now: time.Now}, n.local)
	if err != nil {
		t.Fatal(err)
	}
	a := n.c.Accounts(acc)
	n.run(t)
	waitFor(t, "redis up", 5*time.Second, n.c.Up)
	return n, a
}

// The account service of a node, as the listeners use it (engine.Accounts
// over the cluster backend), for the tests.
func (a *Accounts) FailAccount(ctx context.Context, user, token string, now time.Time) (decide.AccountResult, error) {
	return a.acc.FailAccount(ctx, user, token, now)
}

func (a *Accounts) SucceedAccount(ctx context.Context, user, token string, now time.Time) (engine.DeviceToken, error) {
	return a.acc.SucceedAccount(ctx, user, token, now)
}

func (a *Accounts) Unlock(ctx context.Context, user string, now time.Time) (engine.Unlocked, error) {
	return a.acc.Unlock(ctx, user, now)
}

func (a *Accounts) Attempt(user, token string, now time.Time) decide.Attempt {
	return a.acc.Attempt(user, token, now)
}

func (a *Accounts) Locks(now time.Time) []decide.Lock { return a.acc.Locks(now) }

// Failures of one account through two doormen add up in Redis; the lock,
// the shared device key and an unlock hold on both.
func TestAccountsAcrossInstances(t *testing.T) {
	url, pfx := redisURL(t), prefix(t)
	na, a := startAccounts(t, url, pfx)
	nb, b := startAccounts(t, url, pfx)
	now := time.Now()
	// One device key for both: a token from a is honoured by b.
	tok, err := a.SucceedAccount(ctx, "admin", "", now)
	if err != nil || tok.Token == "" {
		t.Fatalf("token: %+v %v", tok, err)
	}
	for i, s := range []*Accounts{a, b, a, b} {
		res, err := s.FailAccount(ctx, "admin", "", now)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := res.Failures, i+1; got != want || res.NewLock != (i == 3) {
			t.Fatalf("failure %d: %+v, want failures %d, locked at the 4th", i+1, res, want)
		}
	}
	for name, s := range map[string]*Accounts{"a": a, "b": b} {
		waitFor(t, "lock on "+name, 3*time.Second, func() bool { return !s.Attempt("admin", "", now).Allow })
		if at := s.Attempt("admin", tok.Token, now); !at.Allow {
			t.Fatalf("%s: the token issued by a: %+v, want allowed", name, at)
		}
		if at := s.Attempt("other", "", now); !at.Allow {
			t.Fatalf("%s: another account: %+v, want allowed", name, at)
		}
	}
	// b made the lock (the 4th failure), a learned it.
	if n := nb.log.count("msg=lock"); n != 1 {
		t.Errorf("b logged %d lock lines, want 1", n)
	}
	if n := na.log.count("msg=lock", "source=cluster"); n != 1 {
		t.Errorf("a logged %d cluster lock lines, want 1", n)
	}
	// The token's failures add up across doormen too, then it exempts nothing.
	for i, s := range []*Accounts{a, b, a} {
		res, err := s.FailAccount(ctx, "admin", tok.Token, now)
		if err != nil || !res.Device.Counted || res.Device.Failures != i+1 {
			t.Fatalf("token failure %d: %+v %v", i+1, res, err)
		}
	}
	for name, s := range map[string]*Accounts{"a": a, "b": b} {
		waitFor(t, "device lock on "+name, 3*time.Second, func() bool {
			return s.Attempt("admin", tok.Token, now).Reason == decide.DeviceLocked
		})
	}
	// Unlocked through b, open on a.
	if u, err := b.Unlock(ctx, "admin", now); !u.Found || err != nil {
		t.Fatalf("unlock: %+v %v", u, err)
	}
	waitFor(t, "unlock on a", 3*time.Second, func() bool { return a.Attempt("admin", "", now).Allow })
	// A doorman started later loads the lock of another account from Redis.
	for range 4 {
		a.FailAccount(ctx, "root", "", now)
	}
	_, c := startAccounts(t, url, pfx)
	waitFor(t, "lock loaded at start", 3*time.Second, func() bool { return !c.Attempt("root", "", now).Allow })
}
