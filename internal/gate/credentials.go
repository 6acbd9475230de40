package gate

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/store"
)

// Credential kinds.
const (
	KindPasskey = "passkey"
	KindTOTP    = "totp"
)

// Credential is one registered way to sign in. The state file holds it
// whole; Info is what listeners show.
type Credential struct {
	ID      decide.GateCredID    `json:"id"`
	User    string               `json:"user"`
	Kind    string               `json:"kind"`
	Created time.Time            `json:"created"`
	Used    time.Time            `json:"used,omitzero"`
	Passkey *webauthn.Credential `json:"passkey,omitempty"`
	// TOTPSecret is the base32 secret; TOTPStep the last time step a code
	// was accepted for, so that no code is accepted twice.
	TOTPSecret string `json:"totp_secret,omitempty"`
	TOTPStep   int64  `json:"totp_step,omitempty"`
}

// LogValue keeps the secrets out of any log line.
func (c *Credential) LogValue() slog.Value { return slog.AnyValue(c.Info()) }

// Info is a credential without its secrets.
type Info struct {
	ID      string    `json:"id"`
	User    string    `json:"username"`
	Kind    string    `json:"kind"`
	Created time.Time `json:"created"`
	Used    time.Time `json:"last_used,omitzero"`
}

// Info returns c without its secrets.
func (c *Credential) Info() Info {
	return Info{ID: hex.EncodeToString(c.ID[:]), User: c.User, Kind: c.Kind, Created: c.Created, Used: c.Used}
}

// Errors of the credential calls.
var (
	ErrNotFound = errors.New("no such credential")
	ErrFull     = fmt.Errorf("the gate holds %d credentials already", decide.MaxGateCredentials)
)

// ParseID reads a credential id as Info writes it.
func ParseID(s string) (decide.GateCredID, error) {
	var id decide.GateCredID
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(id) {
		return id, fmt.Errorf("credential id %q is not %d hex digits", s, 2*len(id))
	}
	return decide.GateCredID(b), nil
}

// Credentials lists every credential, by user then creation.
func (g *Gate) Credentials() []Info {
	g.mu.Lock()
	out := make([]Info, 0, len(g.creds))
	for _, c := range g.creds {
		out = append(out, c.Info())
	}
	g.mu.Unlock()
	slices.SortFunc(out, func(a, b Info) int {
		if c := strings.Compare(a.User, b.User); c != 0 {
			return c
		}
		return a.Created.Compare(b.Created)
	})
	return out
}

// Revoke deletes the credential id; its sessions end at once.
func (g *Gate) Revoke(id decide.GateCredID) (Info, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	c, ok := g.creds[id]
	if !ok {
		return Info{}, ErrNotFound
	}
	if err := g.write(store.GateOp{Bucket: store.GateCredentials, Key: id[:]}); err != nil {
		return Info{}, err
	}
	delete(g.creds, id)
	g.publish()
	g.o.Log.Warn("gate credential revoked", "username", c.User, "kind", c.Kind, "id", c.Info().ID)
	return c.Info(), nil
}

// SignOut ends every session of user (normalised): its epoch rises. It
// returns false when user has no credential.
func (g *Gate) SignOut(name string) (bool, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	u := g.users[name]
	if u == nil {
		return false, nil
	}
	next := *u
	next.Epoch++
	if err := g.write(userOp(name, &next)); err != nil {
		return false, err
	}
	g.users[name] = &next
	g.publish()
	g.o.Log.Info("gate sign-out everywhere", "username", name)
	return true, nil
}

// userFor returns user name's record, making one (not yet stored) if needed.
// Called with g.mu held.
func (g *Gate) userFor(name string) (*user, bool) {
	if u := g.users[name]; u != nil {
		return u, false
	}
	h := make([]byte, 32)
	_, _ = rand.Read(h)
	return &user{Handle: h}, true
}

// add stores c (and its user when new) and publishes it. Called with g.mu held.
func (g *Gate) add(c *Credential, name string, u *user, newUser bool, more ...store.GateOp) error {
	if len(g.creds) >= decide.MaxGateCredentials {
		return ErrFull
	}
	ops := append([]store.GateOp{credOp(c)}, more...)
	if newUser {
		ops = append(ops, userOp(name, u))
	}
	if err := g.write(ops...); err != nil {
		return err
	}
	g.creds[c.ID] = c
	g.users[name] = u
	g.publish()
	g.o.Log.Info("gate credential registered", "username", name, "kind", c.Kind, "id", c.Info().ID)
	return nil
}

func newCredID() decide.GateCredID {
	var id decide.GateCredID
	_, _ = rand.Read(id[:])
	return id
}
