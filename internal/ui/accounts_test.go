package ui

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/engine"
)

func TestLockedAccounts(t *testing.T) {
	f := newFixture(t, "s3cret")
	clock := func() time.Time { return f.now }
	acc, _, err := engine.NewAccounts(engine.AccountOptions{Policy: decide.AccountPolicy{MaxFailures: 2, FindTime: time.Hour,
		LockTime: 15 * time.Minute, LockFactor: 2, MaxLockTime: time.Hour, DeviceMaxFailures: 2}, Max: 100, Now: clock}, f.local)
	if err != nil {
		t.Fatal(err)
	}
	f.ui.o.Accounts = acc
	for range 2 {
		if _, err := acc.FailAccount(context.Background(), "admin", "", f.now); err != nil {
			t.Fatal(err)
		}
	}
	cookie, csrf := f.login(t)
	page := f.req("GET", "/ui/", cookie, "").body
	if !strings.Contains(page, "Locked accounts") || !strings.Contains(page, `name="user" value="admin"`) || !strings.Contains(page, "in 15 minutes") {
		t.Fatalf("page does not list the lock of admin:\n%s", page)
	}
	if r := f.req("POST", "/ui/unlock", cookie, "user=admin"); r.status != 403 || len(acc.Locks(f.now)) != 1 {
		t.Errorf("unlock without csrf: %d, %d locks; want 403 and the lock kept", r.status, len(acc.Locks(f.now)))
	}
	if r := f.req("POST", "/ui/unlock", cookie, "user=admin&csrf="+csrf); r.status != 303 || len(acc.Locks(f.now)) != 0 {
		t.Errorf("unlock: %d, %d locks; want 303 and no lock", r.status, len(acc.Locks(f.now)))
	}
	if page := f.req("GET", "/ui/", cookie, "").body; !strings.Contains(page, "Unlocked admin.") {
		t.Errorf("no message after the unlock")
	}
}

func TestAccountsOffHidden(t *testing.T) {
	f := newFixture(t, "")
	if page := f.req("GET", "/ui/", "", "").body; strings.Contains(page, "Locked accounts") {
		t.Errorf("locked accounts shown without accounts")
	}
}

// TestUnlockNormalises: the page unlocks the account a name as typed
// reaches, as the API does ("ADMIN " is admin); a name that cannot be an
// account changes nothing.
func TestUnlockNormalises(t *testing.T) {
	f := newFixture(t, "s3cret")
	clock := func() time.Time { return f.now }
	acc, _, err := engine.NewAccounts(engine.AccountOptions{Policy: decide.AccountPolicy{MaxFailures: 1, FindTime: time.Hour,
		LockTime: 15 * time.Minute, LockFactor: 2, MaxLockTime: time.Hour, DeviceMaxFailures: 2}, Max: 100, Now: clock}, f.local)
	if err != nil {
		t.Fatal(err)
	}
	f.ui.o.Accounts = acc
	if _, err := acc.FailAccount(context.Background(), "admin", "", f.now); err != nil {
		t.Fatal(err)
	}
	cookie, csrf := f.login(t)
	for _, tc := range []struct{ user, flash string }{
		{"ad%0Amin", "Not unlocked: &#34;username&#34;: has a control or format character."},
		{"%EF%BC%A1DMIN+", "Unlocked admin."}, // "ＡDMIN "
	} {
		f.req("POST", "/ui/unlock", cookie, "user="+tc.user+"&csrf="+csrf)
		if page := f.req("GET", "/ui/", cookie, "").body; !strings.Contains(page, tc.flash) {
			t.Errorf("unlock %s: no %q on the page", tc.user, tc.flash)
		}
	}
	if n := len(acc.Locks(f.now)); n != 0 {
		t.Errorf("%d locks after unlocking ＡDMIN, want 0", n)
	}
}
