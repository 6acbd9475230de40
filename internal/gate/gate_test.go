package gate

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/engine"
	"github.com/doorman/doorman/internal/store"
)

type fixture struct {
	gate  *Gate
	core  *decide.Core
	local *engine.Local
	acc   *engine.Accounts
	st    *store.Store
	path  string
	now   time.Time
}

// newFixture: 3 failures of an address ban it; 4 of an account lock it.
func newFixture(t *testing.T, path string) *fixture {
	t.Helper()
	f := &fixture{now: time.Unix(1_800_000_000, 0), path: path}
	if path == "" {
		f.path = filepath.Join(t.TempDir(), "state.db")
	}
	f.open(t)
	return f
}

func (f *fixture) open(t *testing.T) {
	t.Helper()
	st, err := store.Open(f.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f.st = st
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	f.core = decide.New(decide.Policy{MaxFailures: 3, FindTime: time.Hour, BanTime: time.Hour, BanFactor: 2, MaxBanTime: 24 * time.Hour,
		IPv4Prefix: 32, IPv6Prefix: 64}, decide.NewLists(nil, nil, nil), 1000, 1000)
	m := engine.NewMetrics(f.core.Stats, false, time.Now)
	f.local = engine.NewLocal(f.core, st, log, m)
	f.acc, _, err = engine.NewAccounts(engine.AccountOptions{Policy: decide.AccountPolicy{MaxFailures: 4, FindTime: time.Hour,
		LockTime: 15 * time.Minute, LockFactor: 2, MaxLockTime: 168 * time.Hour, DeviceMaxFailures: 2},
		Max: 1000, Key: bytes.Repeat([]byte("k"), 32), TTL: time.Hour, Store: st, Now: func() time.Time { return f.now }}, f.local)
	if err != nil {
		t.Fatal(err)
	}
	origin, _ := url.Parse("https://admin.example.com")
	f.gate, _, err = New(Options{Store: st, Origins: []*url.URL{origin}, SessionTTL: 12 * time.Hour, EnrollTTL: 15 * time.Minute,
		TOTP: true, Service: f.local, Accounts: f.acc, Now: func() time.Time { return f.now }, Log: log})
	if err != nil {
		t.Fatal(err)
	}
}

// enrollTOTP enrolls name with TOTP and returns the secret.
func (f *fixture) enrollTOTP(t *testing.T, name string) string {
	t.Helper()
	tok, _, err := f.gate.Enroll(name, f.now)
	if err != nil {
		t.Fatal(err)
	}
	e, err := f.gate.OpenEnrollment(tok, f.now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.gate.OpenEnrollment(tok, f.now); !errors.Is(err, ErrEnrollUnknown) {
		t.Errorf("second opening of a link: %v, want ErrEnrollUnknown", err)
	}
	key, err := otp.NewKeyFromURL(e.TOTPURI)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.gate.ConfirmTOTP(context.Background(), e.ID, netip.MustParseAddr("192.0.2.1"), code(t, key.Secret(), f.now), f.now); err != nil {
		t.Fatal(err)
	}
	return key.Secret()
}

func code(t *testing.T, secret string, at time.Time) string {
	t.Helper()
	c, err := totp.GenerateCode(secret, at)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (f *fixture) check(tok string) bool {
	_, ok := f.gate.Sessions().Check([]byte(tok), f.now)
	return ok
}

func TestTOTPSignIn(t *testing.T) {
	f := newFixture(t, "")
	ctx := context.Background()
	secret := f.enrollTOTP(t, "alice")
	a := netip.MustParseAddr("198.51.100.7")
	f.now = f.now.Add(time.Minute)
	c := code(t, secret, f.now)
	s, err := f.gate.SignInTOTP(ctx, a, "alice", c, f.now)
	if err != nil {
		t.Fatal(err)
	}
	if !f.check(s.Token) || s.User != "alice" {
		t.Fatalf("session %v not valid", s)
	}
	if _, err := f.gate.SignInTOTP(ctx, a, "alice", c, f.now); !errors.Is(err, ErrWrong) {
		t.Errorf("replayed code: %v, want ErrWrong", err)
	}
	if got := f.core.Failures(a, f.now); got != 1 {
		t.Errorf("failures of %v after a replay: %d, want 1", a, got)
	}
	if _, err := f.gate.SignInTOTP(ctx, a, "alice", "000000", f.now); !errors.Is(err, ErrWrong) {
		t.Errorf("wrong code: %v", err)
	}
	if _, err := f.gate.SignInTOTP(ctx, a, "mallory", "123456", f.now); !errors.Is(err, ErrWrong) {
		t.Errorf("unknown user: %v", err)
	}
	if v := f.core.Decide(a, f.now); v.Reason != decide.Banned {
		t.Errorf("after 3 refused codes %v is %v, want banned", a, v.Reason)
	}
}

func TestTOTPLock(t *testing.T) {
	f := newFixture(t, "")
	ctx := context.Background()
	secret := f.enrollTOTP(t, "alice")
	for i := range 4 {
		a := netip.AddrFrom4([4]byte{203, 0, 113, byte(i + 1)})
		if _, err := f.gate.SignInTOTP(ctx, a, "alice", "000000", f.now); !errors.Is(err, ErrWrong) {
			t.Fatalf("wrong code %d: %v", i, err)
		}
	}
	f.now = f.now.Add(time.Minute)
	if _, err := f.gate.SignInTOTP(ctx, netip.MustParseAddr("203.0.113.99"), "alice", code(t, secret, f.now), f.now); !errors.Is(err, ErrLocked) {
		t.Errorf("right code on a locked account: %v, want ErrLocked", err)
	}
}

func TestRevokeAndSignOut(t *testing.T) {
	f := newFixture(t, "")
	ctx := context.Background()
	secret := f.enrollTOTP(t, "alice")
	f.now = f.now.Add(time.Minute)
	s1, err := f.gate.SignInTOTP(ctx, netip.Addr{}, "alice", code(t, secret, f.now), f.now)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := f.gate.SignOut("alice"); !ok || err != nil {
		t.Fatalf("SignOut: %v %v", ok, err)
	}
	if f.check(s1.Token) {
		t.Error("session valid after sign-out everywhere")
	}
	f.now = f.now.Add(time.Minute)
	s2, err := f.gate.SignInTOTP(ctx, netip.Addr{}, "alice", code(t, secret, f.now), f.now)
	if err != nil || !f.check(s2.Token) {
		t.Fatalf("sign-in after sign-out: %v", err)
	}
	creds := f.gate.Credentials()
	if len(creds) != 1 || creds[0].Kind != KindTOTP || creds[0].User != "alice" {
		t.Fatalf("credentials %+v", creds)
	}
	id, err := ParseID(creds[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.gate.Revoke(id); err != nil {
		t.Fatal(err)
	}
	if f.check(s2.Token) {
		t.Error("session valid after its credential was revoked")
	}
	if _, err := f.gate.Revoke(id); !errors.Is(err, ErrNotFound) {
		t.Errorf("second revocation: %v, want ErrNotFound", err)
	}
}

// TestRestart: credentials, the last TOTP step, the epoch and the key
// survive a restart; an unused link does too, a used one does not.
func TestRestart(t *testing.T) {
	f := newFixture(t, "")
	ctx := context.Background()
	secret := f.enrollTOTP(t, "alice")
	f.now = f.now.Add(time.Minute)
	c := code(t, secret, f.now)
	s, err := f.gate.SignInTOTP(ctx, netip.Addr{}, "alice", c, f.now)
	if err != nil {
		t.Fatal(err)
	}
	link, _, err := f.gate.Enroll("bob", f.now)
	if err != nil {
		t.Fatal(err)
	}
	f.st.Close()
	f.open(t)
	if !f.check(s.Token) {
		t.Error("session not valid after a restart")
	}
	if _, err := f.gate.SignInTOTP(ctx, netip.Addr{}, "alice", c, f.now); !errors.Is(err, ErrWrong) {
		t.Errorf("code replayed after a restart: %v, want ErrWrong", err)
	}
	if _, err := f.gate.OpenEnrollment(link, f.now); err != nil {
		t.Errorf("unused link after a restart: %v", err)
	}
}

func TestSecretsStayOut(t *testing.T) {
	f := newFixture(t, "")
	secret := f.enrollTOTP(t, "alice")
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	f.gate.mu.Lock()
	for _, c := range f.gate.creds {
		log.Info("x", "credential", c)
	}
	f.gate.mu.Unlock()
	log.Info("x", "session", Session{Token: "SECRETTOKEN", User: "alice"})
	if strings.Contains(buf.String(), secret) || strings.Contains(buf.String(), "SECRETTOKEN") {
		t.Errorf("a secret in a log line: %s", buf.String())
	}
}
