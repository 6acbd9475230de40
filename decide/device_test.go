package decide

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"
)

func testKey(t testing.TB, fill byte) *DeviceKey {
	t.Helper()
	k, err := NewDeviceKey(bytes.Repeat([]byte{fill}, DeviceKeyMin))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestDeviceKeyLength(t *testing.T) {
	if _, err := NewDeviceKey(make([]byte, DeviceKeyMin-1)); err == nil {
		t.Errorf("a %d-byte key was accepted", DeviceKeyMin-1)
	}
	if _, err := NewDeviceKey(make([]byte, DeviceKeyMin)); err != nil {
		t.Errorf("a %d-byte key: %v", DeviceKeyMin, err)
	}
}

// flipLast changes the token's last character to another that decodes
// strictly (its 4 unused bits zero: A, Q, g or w), so the MAC's last byte
// changes.
func flipLast(tok string) string {
	c := byte('A')
	if tok[len(tok)-1] == 'A' {
		c = 'Q'
	}
	return tok[:len(tok)-1] + string(c)
}

func TestDeviceToken(t *testing.T) {
	k := testKey(t, 1)
	exp := a0.Add(720 * time.Hour)
	tok := k.Issue("admin", exp, [8]byte{1, 2, 3})
	if len(tok) != DeviceTokenLen {
		t.Fatalf("token %q is %d characters, want %d", tok, len(tok), DeviceTokenLen)
	}
	if strings.Contains(tok, "admin") {
		t.Errorf("token %q shows the username", tok)
	}
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		t.Fatal(err)
	}
	forgedMAC := append([]byte(nil), raw...)
	forgedMAC[30] ^= 1
	longer := append([]byte(nil), raw...)
	longer[1+7]++ // expiry one second later, MAC unchanged
	v2 := append([]byte(nil), raw...)
	v2[0] = 2
	// The last character carries 2 unused bits; setting them spells the
	// same bytes differently.
	loose := tok[:len(tok)-1] + string(tok[len(tok)-1]+1)

	tests := []struct {
		name, token, user string
		key               *DeviceKey
		now               time.Time
		want              error
	}{
		{"valid", tok, "admin", k, a0, nil},
		{"valid a second before expiry", tok, "admin", k, exp.Add(-time.Second), nil},
		{"expired at its second", tok, "admin", k, exp, ErrDeviceExpired},
		{"expired long ago", tok, "admin", k, exp.Add(1000 * time.Hour), ErrDeviceExpired},
		{"another account", tok, "root", k, a0, ErrDeviceInvalid},
		{"the account not normalised", tok, "Admin", k, a0, ErrDeviceInvalid},
		{"another key", tok, "admin", testKey(t, 2), a0, ErrDeviceInvalid},
		{"MAC changed", base64.RawURLEncoding.EncodeToString(forgedMAC), "admin", k, a0, ErrDeviceInvalid},
		{"expiry changed", base64.RawURLEncoding.EncodeToString(longer), "admin", k, a0, ErrDeviceInvalid},
		{"last character changed", flipLast(tok), "admin", k, a0, ErrDeviceInvalid},
		{"version 2", base64.RawURLEncoding.EncodeToString(v2), "admin", k, a0, ErrDeviceMalformed},
		{"unused bits set", loose, "admin", k, a0, ErrDeviceMalformed},
		{"padded", tok + "==", "admin", k, a0, ErrDeviceMalformed},
		{"standard alphabet", "+" + tok[1:], "admin", k, a0, ErrDeviceMalformed},
		{"one short", tok[1:], "admin", k, a0, ErrDeviceMalformed},
		{"empty", "", "admin", k, a0, ErrDeviceMalformed},
		{"garbage of the right length", strings.Repeat("!", DeviceTokenLen), "admin", k, a0, ErrDeviceMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id, err := tc.key.Verify(tc.token, tc.user, tc.now)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify = %v, want %v", err, tc.want)
			}
			if err == nil && id != deviceID(raw) {
				t.Errorf("DeviceID = %x, want the hash of the token's bytes", id)
			}
			if err != nil && id != (DeviceID{}) {
				t.Errorf("DeviceID %x with an error", id)
			}
		})
	}
}

func TestDeviceTokensDistinct(t *testing.T) {
	k := testKey(t, 1)
	exp := a0.Add(time.Hour)
	a, b := k.Issue("admin", exp, [8]byte{1}), k.Issue("admin", exp, [8]byte{2})
	if a == b {
		t.Fatal("two nonces gave one token")
	}
	ida, erra := k.Verify(a, "admin", a0)
	idb, errb := k.Verify(b, "admin", a0)
	if erra != nil || errb != nil || ida == idb {
		t.Fatalf("ids %x %x, errors %v %v: want two valid tokens with distinct ids", ida, idb, erra, errb)
	}
}

// TestDeviceFailureLimit: a valid token keeps its holder out of the account's
// lock until DeviceMaxFailures failures with it, then exempts nothing until
// LockTime has passed; expired, forged and other accounts' tokens exempt
// nothing.
func TestDeviceFailureLimit(t *testing.T) {
	k := testKey(t, 1)
	a := NewAccounts(accountPolicy(), 100) // MaxFailures 3, DeviceMaxFailures 2, LockTime 15m
	device := func(tok, user string, now time.Time) Device {
		id, err := k.Verify(tok, user, now)
		return Device{ID: id, Valid: err == nil}
	}
	mine := k.Issue("admin", a0.Add(time.Hour), [8]byte{1})
	expired := k.Issue("admin", a0.Add(time.Minute), [8]byte{2})
	others := k.Issue("root", a0.Add(time.Hour), [8]byte{3})
	forged := flipLast(mine)

	// The attack locks the account.
	if r := fails(a, "admin", Device{}, 3, a0); !r.NewLock {
		t.Fatalf("attack did not lock: %+v", r)
	}
	at := a0.Add(5 * time.Minute)
	checks := []struct {
		name   string
		token  string
		allow  bool
		reason AccountReason
	}{
		{"own valid token", mine, true, AccountOpen},
		{"no token", "", false, AccountLocked},
		{"expired token", expired, false, AccountLocked},
		{"another account's token", others, false, AccountLocked},
		{"forged token", forged, false, AccountLocked},
	}
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			got := a.Check("admin", device(c.token, "admin", at), at)
			if got.Allow != c.allow || got.Reason != c.reason {
				t.Errorf("Check = %+v, want allow %v reason %q", got, c.allow, c.reason)
			}
		})
	}

	// A failure with the valid token counts against the token, not the account.
	before, _, _ := a.Status("admin", at)
	r := a.Fail("admin", device(mine, "admin", at), at)
	if !r.Device.Counted || r.Device.Failures != 1 || r.Device.Locked || r.Failures != before.Failures {
		t.Fatalf("first failure with the token: %+v (account had %d failures)", r, before.Failures)
	}
	if got := a.Check("admin", device(mine, "admin", at), at); !got.Allow {
		t.Fatalf("after one failure with the token: %+v", got)
	}
	// The second (DeviceMaxFailures-th) locks the token for LockTime.
	at2 := at.Add(time.Second)
	r = a.Fail("admin", device(mine, "admin", at2), at2)
	if !r.Device.Counted || !r.Device.Locked || !r.Device.Until.Equal(at2.Add(15*time.Minute)) {
		t.Fatalf("second failure with the token: %+v, want the token locked for 15m", r)
	}
	got := a.Check("admin", device(mine, "admin", at2), at2)
	lockEnd := a0.Add(2*time.Second + 15*time.Minute) // the account's, sooner than the token's
	if got.Allow || got.Reason != DeviceLocked || !got.Until.Equal(lockEnd) {
		t.Fatalf("Check with the locked token = %+v, want device-locked until %v", got, lockEnd)
	}
	// A locked token exempts nothing: its failures count against the account.
	r = a.Fail("admin", device(mine, "admin", at2), at2)
	if r.Device.Counted || !r.Device.Locked {
		t.Errorf("failure with the locked token: %+v, want counted against the account", r)
	}
	// Another, unlocked token of the same account still exempts.
	second := k.Issue("admin", a0.Add(time.Hour), [8]byte{4})
	if got := a.Check("admin", device(second, "admin", at2), at2); !got.Allow {
		t.Errorf("another token of the account: %+v", got)
	}
	// After the token's LockTime (the account relocked meanwhile), it exempts again.
	fails(a, "admin", Device{}, 3, lockEnd)
	at3 := at2.Add(15 * time.Minute)
	if got := a.Check("admin", device(mine, "admin", at3), at3); !got.Allow {
		t.Errorf("after the token's lock: %+v, want allow", got)
	}
	if got := a.Check("admin", Device{}, at3); got.Allow {
		t.Errorf("the account's new lock does not hold: %+v", got)
	}
	// A success with the token forgets its failures.
	a.Fail("admin", device(mine, "admin", at3), at3)
	a.Succeed("admin", device(mine, "admin", at3))
	if r := a.Fail("admin", device(mine, "admin", at3), at3); r.Device.Failures != 1 {
		t.Errorf("after a success: %d token failures, want 1", r.Device.Failures)
	}

	// On an account not locked: two failures with the token lock the token,
	// not the account; after that the token's failures lock the account.
	ops := k.Issue("ops", a0.Add(time.Hour), [8]byte{5})
	for i, want := range []struct {
		counted, tokenLocked bool
		failures             int
		locked               bool
	}{{true, false, 0, false}, {true, true, 0, false}, {false, true, 1, false}, {false, true, 2, false}, {false, true, 3, true}} {
		r := a.Fail("ops", device(ops, "ops", a0), a0)
		if r.Device.Counted != want.counted || r.Device.Locked != want.tokenLocked || r.Failures != want.failures || r.Locked != want.locked {
			t.Errorf("ops failure %d with its token: %+v, want %+v", i+1, r, want)
		}
	}
}
