package engine

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/store"
)

func accountPolicy() decide.AccountPolicy {
	return decide.AccountPolicy{MaxFailures: 3, FindTime: time.Hour, LockTime: 15 * time.Minute, LockFactor: 2,
		MaxLockTime: 168 * time.Hour, DeviceMaxFailures: 2}
}

func newAccounts(t *testing.T, st *store.Store, key []byte, max int, log *bytes.Buffer) (*Accounts, string) {
	t.Helper()
	local := newLocal(t, 100, st)
	if log != nil {
		local.log = slog.New(slog.NewTextHandler(log, nil))
	}
	a, src, err := NewAccounts(AccountOptions{Policy: accountPolicy(), Max: max, Key: key, TTL: 720 * time.Hour,
		Store: st, Now: func() time.Time { return t0 }}, local)
	if err != nil {
		t.Fatal(err)
	}
	return a, src
}

func lockAccount(t *testing.T, a *Accounts, user string, at time.Time) decide.AccountResult {
	t.Helper()
	var r decide.AccountResult
	for i := range 3 {
		var err error
		if r, err = a.FailAccount(context.Background(), user, "", at.Add(time.Duration(i)*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	if !r.NewLock {
		t.Fatalf("%s not locked: %+v", user, r)
	}
	return r
}

func storedLocks(t *testing.T, st *store.Store) map[string]decide.Lock {
	t.Helper()
	locks, err := st.LoadLocks(t0, 1000*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]decide.Lock{}
	for _, l := range locks {
		out[l.Username] = l
	}
	return out
}

// TestLocksPersistBeforeAck: a lock is in the state file when FailAccount
// returns; an unlock deletes it; a restart finds the lock and the device
// key, so a token issued before it still exempts its holder.
func TestLocksPersistBeforeAck(t *testing.T) {
	path := t.TempDir() + "/state.db"
	st := openStore(t, path)
	var log bytes.Buffer
	a, src := newAccounts(t, st, nil, 100, &log)
	if src != "generated, kept in the state file" {
		t.Errorf("key source %q", src)
	}
	tok, err := a.SucceedAccount(context.Background(), "admin", "", t0)
	if err != nil || len(tok.Token) != decide.DeviceTokenLen || !tok.Expires.Equal(t0.Add(720*time.Hour)) {
		t.Fatalf("token %+v, %v", tok, err)
	}
	r := lockAccount(t, a, "admin", t0)
	lockAccount(t, a, "root", t0)
	got := storedLocks(t, st)
	if l, ok := got["admin"]; !ok || !l.Until.Equal(r.Until) || l.Count != 1 || l.Failures != 3 {
		t.Fatalf("stored lock of admin = %+v, %v; want until %v count 1", l, ok, r.Until)
	}
	if !strings.Contains(log.String(), "level=WARN msg=lock username=admin until=") {
		t.Errorf("no lock line:\n%s", log.String())
	}
	if u, err := a.Unlock(context.Background(), "root", t0); !u.Found || err != nil {
		t.Fatalf("Unlock root: %v %v", u.Found, err)
	}
	if _, ok := storedLocks(t, st)["root"]; ok {
		t.Error("root still in the state file after Unlock")
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	st = openStore(t, path)
	defer st.Close()
	b, src := newAccounts(t, st, nil, 100, nil)
	if src != "state file" {
		t.Errorf("key source after restart %q", src)
	}
	now := t0.Add(time.Minute)
	if at := b.Attempt("admin", "", now); at.Allow || !at.Until.Equal(r.Until) {
		t.Errorf("after restart without a token: %+v, want locked until %v", at, r.Until)
	}
	if at := b.Attempt("admin", tok.Token, now); !at.Allow {
		t.Errorf("after restart with the token issued before: %+v, want allow", at)
	}
	if at := b.Attempt("root", "", now); !at.Allow {
		t.Errorf("root after restart: %+v, want allow", at)
	}
	// The restored count escalates the next lock.
	if r := lockAccount(t, b, "admin", r.Until.Add(time.Minute)); r.Count != 2 {
		t.Errorf("lock after restart: count %d, want 2", r.Count)
	}
}

func TestDeviceKeySources(t *testing.T) {
	key := bytes.Repeat([]byte("z"), 32)
	a, src := newAccounts(t, nil, key, 10, nil)
	b, _ := newAccounts(t, nil, key, 10, nil)
	if src != "DOORMAN_DEVICE_KEY" {
		t.Errorf("source %q", src)
	}
	tok, _ := a.SucceedAccount(context.Background(), "admin", "", t0)
	if !b.Device("admin", tok.Token, t0).Valid {
		t.Error("a token of one instance is not valid on another with the same DOORMAN_DEVICE_KEY")
	}
	c, src := newAccounts(t, nil, nil, 10, nil)
	if !strings.HasPrefix(src, "generated for this process") {
		t.Errorf("source without a state file %q", src)
	}
	if c.Device("admin", tok.Token, t0).Valid {
		t.Error("a token is valid under another key")
	}
	// The configured key wins over the state file's.
	st := openStore(t, t.TempDir()+"/state.db")
	defer st.Close()
	newAccounts(t, st, nil, 10, nil)
	d, src := newAccounts(t, st, key, 10, nil)
	if src != "DOORMAN_DEVICE_KEY" || !d.Device("admin", tok.Token, t0).Valid {
		t.Errorf("with DOORMAN_DEVICE_KEY and a state file: source %q", src)
	}
	if _, _, err := NewAccounts(AccountOptions{Policy: accountPolicy(), Max: 1, Key: []byte("short"), Now: time.Now}, newLocal(t, 1, nil)); err == nil {
		t.Error("a short key was accepted")
	}
}

// TestEvictedLocksLeaveTheStateFile: an account with a lock record evicted
// from a full table is deleted from the file too, so a restart does not
// bring back more than the table holds.
func TestEvictedLocksLeaveTheStateFile(t *testing.T) {
	st := openStore(t, t.TempDir()+"/state.db")
	defer st.Close()
	a, _ := newAccounts(t, st, nil, 2, nil)
	lockAccount(t, a, "a", t0)
	lockAccount(t, a, "b", t0.Add(time.Minute))
	r, err := a.FailAccount(context.Background(), "c", "", t0.Add(2*time.Minute))
	if err != nil || len(r.Evicted) != 1 || r.Evicted[0].Username != "a" || !r.Evicted[0].Locked {
		t.Fatalf("failure of c: %+v, %v; want a's lock evicted", r, err)
	}
	got := storedLocks(t, st)
	if _, ok := got["a"]; ok || len(got) != 1 {
		t.Errorf("state file holds %v, want b alone", got)
	}
}

func TestLockEvents(t *testing.T) {
	a, _ := newAccounts(t, nil, nil, 10, nil)
	var got []string
	a.local.OnEvent(func(e Event) { got = append(got, fmt.Sprintf("%s %s %s", e.Type, e.Subject(), e.Source)) })
	lockAccount(t, a, "admin", t0)
	a.Unlock(context.Background(), "admin", t0)
	want := []string{"lock admin failures", "unlock admin manual"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("events %q, want %q", got, want)
	}
}
