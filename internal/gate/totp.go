package gate

import (
	"bytes"
	"context"
	"crypto/subtle"
	"errors"
	"image/png"
	"net/netip"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
)

// TOTP as authenticator apps expect it: SHA-1, six digits, 30-second steps;
// a code of the step before or after is accepted too (clock skew), and no
// step at or before the last one accepted for the credential is accepted
// again, so a code observed in use is worth nothing.
const (
	totpPeriod = 30
	totpSkew   = 1
)

var totpOpts = totp.ValidateOpts{Period: totpPeriod, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1}

// Sign-in errors. ErrWrong is all a client learns of a refused code or
// assertion: wrong, replayed, unknown user and no TOTP look alike.
var (
	ErrWrong  = errors.New("sign-in refused")
	ErrLocked = errors.New("account locked: use a passkey")
	ErrOff    = errors.New("TOTP is off")
)

func newTOTP(name string) (*otp.Key, []byte, error) {
	key, err := totp.Generate(totp.GenerateOpts{Issuer: "doorman", AccountName: name, Period: totpPeriod,
		Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
	if err != nil {
		return nil, nil, err
	}
	img, err := key.Image(240, 240)
	if err != nil {
		return nil, nil, err
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return nil, nil, err
	}
	return key, buf.Bytes(), nil
}

// totpStep returns the time step whose code is code, within the skew of
// now, and whether there is one.
func totpStep(secret, code string, now time.Time) (int64, bool) {
	if len(code) != 6 {
		return 0, false
	}
	step := now.Unix() / totpPeriod
	found, at := 0, int64(0)
	for d := int64(-totpSkew); d <= totpSkew; d++ {
		want, err := totp.GenerateCodeCustom(secret, time.Unix((step+d)*totpPeriod, 0), totpOpts)
		if err != nil {
			return 0, false
		}
		if subtle.ConstantTimeCompare([]byte(want), []byte(code)) == 1 && found == 0 {
			found, at = 1, step+d
		}
	}
	return at, found == 1
}

// ConfirmTOTP registers the enrollment's TOTP secret once the person typed
// a right code from it (which then counts as used), and signs them in. A
// wrong code is a failure of the address.
func (g *Gate) ConfirmTOTP(ctx context.Context, id string, a netip.Addr, code string, now time.Time) (Session, error) {
	c, err := g.cer.get(id, cerEnroll, now)
	if err != nil {
		return Session{}, err
	}
	if c.totpSecret == "" {
		return Session{}, ErrOff
	}
	step, ok := totpStep(c.totpSecret, code, now)
	if !ok {
		return Session{}, g.failed(ctx, a, c.user, now)
	}
	cred := &Credential{ID: newCredID(), User: c.user, Kind: KindTOTP, Created: now.UTC(), Used: now.UTC(),
		TOTPSecret: c.totpSecret, TOTPStep: step}
	g.mu.Lock()
	defer g.mu.Unlock()
	u, fresh := g.userFor(c.user)
	if err := g.add(cred, c.user, u, fresh); err != nil {
		return Session{}, err
	}
	g.cer.update(id, func(c *ceremony) { c.totpSecret = "" })
	return g.session(cred, now), nil
}

// SignInTOTP signs user (normalised) in with a TOTP code from address a.
// A locked account is refused (ErrLocked) before any code is looked at; a
// wrong or replayed code is a failure of the address and the account.
func (g *Gate) SignInTOTP(ctx context.Context, a netip.Addr, name, code string, now time.Time) (Session, error) {
	if !g.o.TOTP {
		return Session{}, ErrOff
	}
	if acc := g.o.Accounts; acc != nil && acc.Enabled() && name != "" {
		if at := acc.Attempt(name, "", now); !at.Allow {
			return Session{}, ErrLocked
		}
	}
	g.mu.Lock()
	var match *Credential
	var step int64
	for _, c := range g.creds {
		if c.User != name || c.Kind != KindTOTP {
			continue
		}
		if s, ok := totpStep(c.TOTPSecret, code, now); ok && s > c.TOTPStep {
			match, step = c, s
			break
		}
	}
	if match == nil {
		g.mu.Unlock()
		return Session{}, g.failed(ctx, a, name, now)
	}
	defer g.mu.Unlock()
	if first, err := g.usedStep(ctx, match.ID, step); err != nil {
		return Session{}, err
	} else if !first {
		return Session{}, g.failed(ctx, a, name, now) // used through another doorman
	}
	next := *match
	next.TOTPStep, next.Used = step, now.UTC()
	// The step is on disk before the session leaves: after a crash the code
	// is still used.
	if err := g.write(credOp(&next)); err != nil {
		return Session{}, err
	}
	g.creds[next.ID] = &next
	return g.session(&next, now), nil
}
