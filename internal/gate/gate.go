// Package gate is doorman's second factor at the proxy: enrollment links,
// the credentials they register (passkeys through go-webauthn, TOTP secrets
// through pquerna/otp), and the sessions a sign-in earns.
//
// Invariants:
//   - Sessions are checked by decide.Gate (Sessions), which holds the key and
//     the live credential table; the Gate republishes that table whole after
//     every change, so a revocation holds at the next check.
//   - Every change of credentials, users or enrollment links is written to
//     the state file and fsynced before the call returns; memory changes only
//     after the write succeeded.
//   - A failed TOTP code or passkey assertion is a failure of the address
//     (engine.Local.Fail) and of the account (engine.Accounts.FailAccount),
//     the webhook's write path; an account lock stops TOTP, not passkeys.
//   - Secrets (TOTP secrets, enrollment tokens, sessions) are never logged.
//
// A Gate is safe for concurrent use; writers serialize on one mutex.
package gate

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"time"

	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/engine"
	"github.com/doorman/doorman/internal/store"
)

// Options configure New.
type Options struct {
	Store      *store.Store // nil: memory only (credentials end with the process)
	Key        []byte       // DOORMAN_GATE_KEY; empty: the state file's, or a new one
	Origins    []*url.URL   // DOORMAN_GATE_ORIGINS; the first one's host is the relying party
	SessionTTL time.Duration
	EnrollTTL  time.Duration
	TOTP       bool
	Service    *engine.Local    // failures of the address
	Accounts   *engine.Accounts // failures and locks of the account; nil: none
	Shared     Shared           // cluster mode; nil: this doorman alone
	Now        func() time.Time
	Log        *slog.Logger
}

// Gate is the gate's service.
type Gate struct {
	o        Options
	sessions decide.Gate
	wa       *webauthn.WebAuthn
	cer      *ceremonies
	keyMu    sync.Mutex
	key      []byte // the key sessions are signed with
	joined   bool   // cluster mode: the first sync is done (under mu)

	mu      sync.Mutex // writers; the maps below change under it
	creds   map[decide.GateCredID]*Credential
	users   map[string]*user
	enrolls map[[32]byte]enrollRecord
}

// user is what the gate keeps per person: the epoch their sessions carry
// and the WebAuthn user handle their passkeys were made for.
type user struct {
	Epoch  uint32 `json:"epoch"`
	Handle []byte `json:"handle"`
}

// New returns the gate, with the key and the records of the state file.
// It returns where the key came from, for the start line.
func New(o Options) (*Gate, string, error) {
	rp := o.Origins[0].Hostname()
	origins := make([]string, len(o.Origins))
	for i, u := range o.Origins {
		origins[i] = u.Scheme + "://" + u.Host
	}
	wa, err := webauthn.New(&webauthn.Config{RPID: rp, RPDisplayName: "doorman", RPOrigins: origins})
	if err != nil {
		return nil, "", fmt.Errorf("DOORMAN_GATE_ORIGINS: %v", err)
	}
	g := &Gate{o: o, wa: wa, cer: newCeremonies(), creds: map[decide.GateCredID]*Credential{},
		users: map[string]*user{}, enrolls: map[[32]byte]enrollRecord{}}
	src, err := g.loadKey()
	if err != nil {
		return nil, "", err
	}
	if err := g.load(); err != nil {
		return nil, "", err
	}
	g.publish()
	return g, src, nil
}

func randomKey() ([]byte, error) {
	k := make([]byte, decide.GateKeyMin)
	_, err := rand.Read(k)
	return k, err
}

func (g *Gate) loadKey() (string, error) {
	key, src := g.o.Key, "DOORMAN_GATE_KEY"
	switch {
	case len(key) > 0:
	case g.o.Store == nil:
		var err error
		if key, err = randomKey(); err != nil {
			return "", err
		}
		src = "generated for this process (no state file: sessions end at restart)"
	default:
		k, created, err := g.o.Store.GateKey(randomKey)
		if err != nil {
			return "", fmt.Errorf("state file %s: the gate key: %w", g.o.Store.Path(), err)
		}
		key, src = k, "state file"
		if created {
			src = "generated, kept in the state file"
		}
	}
	if err := g.sessions.SetKey(key); err != nil {
		return "", fmt.Errorf("DOORMAN_GATE_KEY: %v", err)
	}
	g.key = key
	return src, nil
}

// load reads the state file's records; one that does not decode stops the
// start, as a damaged ban record would not: a credential silently dropped
// would lock its owner out.
func (g *Gate) load() error {
	st := g.o.Store
	if st == nil {
		return nil
	}
	var bad error
	note := func(what string, k []byte, err error) {
		if err != nil && bad == nil {
			bad = fmt.Errorf("state file %s: gate %s %x: %v", st.Path(), what, k, err)
		}
	}
	err := errors.Join(
		st.GateRecords(store.GateCredentials, func(k, v []byte) {
			c := new(Credential)
			err := json.Unmarshal(v, c)
			if err == nil && len(k) == len(c.ID) {
				g.creds[c.ID] = c
			}
			note("credential", k, err)
		}),
		st.GateRecords(store.GateUsers, func(k, v []byte) {
			u := new(user)
			err := json.Unmarshal(v, u)
			g.users[string(k)] = u
			note("user", k, err)
		}),
		st.GateRecords(store.GateEnrollments, func(k, v []byte) {
			var e enrollRecord
			err := json.Unmarshal(v, &e)
			if err == nil && len(k) == 32 {
				g.enrolls[[32]byte(k)] = e
			}
			note("enrollment", k, err)
		}),
	)
	if err != nil {
		return fmt.Errorf("state file %s: reading the gate's records: %w", st.Path(), err)
	}
	return bad
}

// publish builds the live table from the credentials and users and hands it
// to the session check. Called with g.mu held (or before g is shared).
func (g *Gate) publish() {
	live := make(map[decide.GateCredID]decide.GateEntry, len(g.creds))
	for id, c := range g.creds {
		var epoch uint32
		if u := g.users[c.User]; u != nil {
			epoch = u.Epoch
		}
		live[id] = decide.GateEntry{User: c.User, Epoch: epoch, UserHeader: []byte(c.User)}
	}
	g.sessions.SetCredentials(live)
}

// Sessions is the session check, for the decision path.
func (g *Gate) Sessions() *decide.Gate { return &g.sessions }

// TOTP reports whether TOTP is offered.
func (g *Gate) TOTP() bool { return g.o.TOTP }

// SessionTTL is the life of a session, for the cookie.
func (g *Gate) SessionTTL() time.Duration { return g.o.SessionTTL }

// Origins are the gated sites' origins (scheme://host[:port]).
func (g *Gate) Origins() []*url.URL { return g.o.Origins }

// session issues a session for c. Called with g.mu held.
func (g *Gate) session(c *Credential, now time.Time) Session {
	var epoch uint32
	if u := g.users[c.User]; u != nil {
		epoch = u.Epoch
	}
	exp := now.Add(g.o.SessionTTL).Truncate(time.Second)
	return Session{Token: g.sessions.Issue(c.ID, epoch, exp), User: c.User, Expires: exp.UTC()}
}

// Session is a signed-in session: the doorman_gate cookie's value.
type Session struct {
	Token   string
	User    string
	Expires time.Time
}

// LogValue keeps the token out of any log line.
func (s Session) LogValue() slog.Value {
	return slog.GroupValue(slog.String("user", s.User), slog.String("expires", s.Expires.Format(time.RFC3339)))
}

// write stores ops: in the cluster first (cluster mode), then in the state
// file (fsync). On an error nothing changed in memory.
func (g *Gate) write(ops ...store.GateOp) error {
	if g.o.Shared != nil {
		c, cancel := context.WithTimeout(context.Background(), sharedTimeout)
		err := g.o.Shared.Write(c, ops)
		cancel()
		if err != nil {
			g.o.Log.Error("gate: writing to the cluster failed", "err", err)
			return fmt.Errorf("cluster: %w", err)
		}
	}
	if g.o.Store == nil {
		return nil
	}
	if err := g.o.Store.GateWrite(ops...); err != nil {
		g.o.Log.Error("state file write failed", "file", g.o.Store.Path(), "err", err)
		return fmt.Errorf("state file %s: %w", g.o.Store.Path(), err)
	}
	return nil
}

func credOp(c *Credential) store.GateOp {
	v, _ := json.Marshal(c) // a Credential always encodes
	return store.GateOp{Bucket: store.GateCredentials, Key: c.ID[:], Value: v}
}

func userOp(name string, u *user) store.GateOp {
	v, _ := json.Marshal(u)
	return store.GateOp{Bucket: store.GateUsers, Key: []byte(name), Value: v}
}
