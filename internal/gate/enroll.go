package gate

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/doorman/doorman/internal/store"
)

// An enrollment link carries a random token; the state file keeps only its
// SHA-256, the user it enrolls and when it ends. Opening the link (a GET)
// only looks it up (PeekEnrollment), so a chat app's link preview does not
// burn it; the person's POST from that page uses it up (the record is
// deleted, fsynced) and starts an enrollment ceremony in memory, bound to
// the browser by a cookie: there the person registers a passkey and, where
// allowed, a TOTP secret.
type enrollRecord struct {
	User    string    `json:"user"`
	Expires time.Time `json:"expires"`
}

// MaxEnrollments is the most enrollment links outstanding at once.
const MaxEnrollments = 1000

// Enrollment errors.
var (
	ErrEnrollUnknown = errors.New("enrollment link unknown, used or expired")
	ErrEnrollFull    = errors.New("too many enrollment links outstanding")
)

// Enroll returns a new one-time enrollment token for user (normalised),
// valid DOORMAN_GATE_ENROLL_TTL, and when it ends.
func (g *Gate) Enroll(name string, now time.Time) (string, time.Time, error) {
	var raw [32]byte
	_, _ = rand.Read(raw[:])
	tok := base64.RawURLEncoding.EncodeToString(raw[:])
	rec := enrollRecord{User: name, Expires: now.Add(g.o.EnrollTTL).UTC().Truncate(time.Second)}
	g.mu.Lock()
	defer g.mu.Unlock()
	var ops []store.GateOp
	for h, e := range g.enrolls {
		if !now.Before(e.Expires) {
			ops = append(ops, store.GateOp{Bucket: store.GateEnrollments, Key: h[:]})
		}
	}
	if len(g.enrolls)-len(ops) >= MaxEnrollments {
		return "", time.Time{}, ErrEnrollFull
	}
	h := sha256.Sum256([]byte(tok))
	v, _ := json.Marshal(rec)
	ops = append(ops, store.GateOp{Bucket: store.GateEnrollments, Key: h[:], Value: v})
	if err := g.write(ops...); err != nil {
		return "", time.Time{}, err
	}
	for _, op := range ops[:len(ops)-1] {
		delete(g.enrolls, [32]byte(op.Key))
	}
	g.enrolls[h] = rec
	g.o.Log.Info("gate enrollment link made", "username", name, "expires", rec.Expires.Format(time.RFC3339))
	return tok, rec.Expires, nil
}

// Enrollment is an opened enrollment link.
type Enrollment struct {
	ID   string // the ceremony, kept in the browser's cookie
	User string
	// TOTPURI is the otpauth:// URI of a new TOTP secret, shown once, and
	// TOTPQR its QR code (PNG); empty when TOTP is off.
	TOTPURI string
	TOTPQR  []byte
}

// PeekEnrollment returns the user the link token enrolls, without using it
// up; ErrEnrollUnknown when it is unknown, used or expired.
func (g *Gate) PeekEnrollment(tok string, now time.Time) (string, error) {
	h := sha256.Sum256([]byte(tok))
	g.mu.Lock()
	rec, ok := g.enrolls[h]
	g.mu.Unlock()
	if !ok || !now.Before(rec.Expires) {
		return "", ErrEnrollUnknown
	}
	return rec.User, nil
}

// OpenEnrollment uses up the link token and starts its ceremony.
func (g *Gate) OpenEnrollment(tok string, now time.Time) (Enrollment, error) {
	h := sha256.Sum256([]byte(tok))
	g.mu.Lock()
	rec, ok := g.enrolls[h]
	if ok {
		if err := g.useLink(h); err != nil {
			ok = false
			if !errors.Is(err, ErrEnrollUnknown) {
				g.mu.Unlock()
				return Enrollment{}, err
			}
		}
		delete(g.enrolls, h)
	}
	g.mu.Unlock()
	if !ok || !now.Before(rec.Expires) {
		return Enrollment{}, ErrEnrollUnknown
	}
	c := &ceremony{kind: cerEnroll, user: rec.User, expires: now.Add(g.o.EnrollTTL)}
	e := Enrollment{User: rec.User}
	if g.o.TOTP {
		key, png, err := newTOTP(rec.User)
		if err != nil {
			return Enrollment{}, err
		}
		c.totpSecret = key.Secret()
		e.TOTPURI, e.TOTPQR = key.URL(), png
	}
	id, err := g.cer.put(c, now)
	if err != nil {
		return Enrollment{}, err
	}
	e.ID = id
	return e, nil
}

// useLink deletes the link h: in the cluster first (cluster mode), where
// only one doorman can take it (ErrEnrollUnknown for the others), then in
// the state file. Called with g.mu held.
func (g *Gate) useLink(h [32]byte) error {
	if g.o.Shared != nil {
		c, cancel := context.WithTimeout(context.Background(), sharedTimeout)
		took, err := g.o.Shared.Take(c, store.GateEnrollments, h[:])
		cancel()
		if err != nil {
			return fmt.Errorf("cluster: %w", err)
		}
		if !took {
			return ErrEnrollUnknown
		}
	}
	if g.o.Store == nil {
		return nil
	}
	return g.o.Store.GateWrite(store.GateOp{Bucket: store.GateEnrollments, Key: h[:]})
}

// EnrollURL is the enrollment page of the first gated origin for tok.
func (g *Gate) EnrollURL(tok string) string {
	o := g.o.Origins[0]
	return o.Scheme + "://" + o.Host + "/_doorman/enroll?t=" + tok
}
