package gate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"time"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"
)

// Passkeys: the browser's navigator.credentials calls, verified by
// go-webauthn. Registration needs an opened enrollment; sign-in is
// discoverable (the passkey names its user), so the gate page asks for no
// username. A passkey is made resident and with user verification
// preferred.

// waUser is a person as go-webauthn sees them.
type waUser struct {
	name   string
	handle []byte
	creds  []webauthn.Credential
}

func (u *waUser) WebAuthnID() []byte                         { return u.handle }
func (u *waUser) WebAuthnName() string                       { return u.name }
func (u *waUser) WebAuthnDisplayName() string                { return u.name }
func (u *waUser) WebAuthnCredentials() []webauthn.Credential { return u.creds }

// waUserLocked is name's WebAuthn view. Called with g.mu held.
func (g *Gate) waUserLocked(name string, handle []byte) *waUser {
	u := &waUser{name: name, handle: handle}
	for _, c := range g.creds {
		if c.User == name && c.Kind == KindPasskey && c.Passkey != nil {
			u.creds = append(u.creds, *c.Passkey)
		}
	}
	return u
}

// BeginRegistration returns the options for navigator.credentials.create
// in the enrollment ceremony id.
func (g *Gate) BeginRegistration(id string, now time.Time) ([]byte, error) {
	c, err := g.cer.get(id, cerEnroll, now)
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	// A new user's handle is kept in the ceremony until the passkey made
	// for it is stored.
	handle := c.handle
	if u := g.users[c.user]; u != nil {
		handle = u.Handle
	} else if handle == nil {
		u, _ := g.userFor(c.user)
		handle = u.Handle
	}
	wu := g.waUserLocked(c.user, handle)
	g.mu.Unlock()
	excl := make([]protocol.CredentialDescriptor, 0, len(wu.creds))
	for _, pc := range wu.creds {
		excl = append(excl, pc.Descriptor())
	}
	opts, sess, err := g.wa.BeginRegistration(wu,
		webauthn.WithResidentKeyRequirement(protocol.ResidentKeyRequirementRequired),
		webauthn.WithAuthenticatorSelection(protocol.AuthenticatorSelection{
			ResidentKey: protocol.ResidentKeyRequirementRequired, UserVerification: protocol.VerificationPreferred}),
		webauthn.WithExclusions(excl))
	if err != nil {
		return nil, err
	}
	g.cer.update(id, func(c *ceremony) { c.wa, c.handle = sess, handle })
	return json.Marshal(opts)
}

// FinishRegistration verifies the browser's answer to BeginRegistration,
// stores the passkey and signs the person in. A refused answer is a failure
// of the address.
func (g *Gate) FinishRegistration(ctx context.Context, id string, a netip.Addr, body []byte, now time.Time) (Session, error) {
	c, err := g.cer.get(id, cerEnroll, now)
	if err != nil || c.wa == nil {
		return Session{}, ErrCeremony
	}
	sess, handle := *c.wa, c.handle
	g.cer.update(id, func(c *ceremony) { c.wa = nil }) // one answer per challenge
	parsed, err := protocol.ParseCredentialCreationResponseBytes(body)
	if err != nil {
		g.o.Log.Debug("gate registration unreadable", "err", err)
		return Session{}, g.failed(ctx, a, "", now)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	wu := g.waUserLocked(c.user, handle)
	pc, err := g.wa.CreateCredential(wu, sess, parsed)
	if err != nil {
		g.o.Log.Info("gate registration refused", "username", c.user, "err", err)
		return Session{}, g.failed(ctx, a, "", now)
	}
	u := g.users[c.user]
	fresh := u == nil
	if fresh {
		u = &user{Handle: handle}
	}
	cred := &Credential{ID: newCredID(), User: c.user, Kind: KindPasskey, Created: now.UTC(), Used: now.UTC(), Passkey: pc}
	if err := g.add(cred, c.user, u, fresh); err != nil {
		return Session{}, err
	}
	return g.session(cred, now), nil
}

// BeginLogin starts a passkey sign-in: the ceremony's id and the options
// for navigator.credentials.get.
func (g *Gate) BeginLogin(now time.Time) (string, []byte, error) {
	opts, sess, err := g.wa.BeginDiscoverableLogin(webauthn.WithUserVerification(protocol.VerificationPreferred))
	if err != nil {
		return "", nil, err
	}
	id, err := g.cer.put(&ceremony{kind: cerLogin, wa: sess, expires: now.Add(loginTTL)}, now)
	if err != nil {
		return "", nil, err
	}
	b, err := json.Marshal(opts)
	return id, b, err
}

// FinishLogin verifies the browser's answer to BeginLogin and signs the
// passkey's user in. A refused answer is a failure of the address and,
// when the passkey named a known user, of the account; an account lock does
// not stop a passkey.
func (g *Gate) FinishLogin(ctx context.Context, id string, a netip.Addr, body []byte, now time.Time) (Session, error) {
	c, err := g.cer.take(id, cerLogin, now)
	if err != nil {
		return Session{}, err
	}
	parsed, err := protocol.ParseCredentialRequestResponseBytes(body)
	if err != nil {
		return Session{}, g.failed(ctx, a, "", now)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	var name string
	handler := func(_, handle []byte) (webauthn.User, error) {
		for n, u := range g.users {
			if u != nil && bytes.Equal(u.Handle, handle) {
				name = n
				return g.waUserLocked(n, u.Handle), nil
			}
		}
		return nil, errors.New("no user has this handle")
	}
	_, pc, err := g.wa.ValidatePasskeyLogin(handler, *c.wa, parsed)
	if err != nil {
		g.o.Log.Info("gate passkey refused", "username", name, "err", err)
		return Session{}, g.failed(ctx, a, name, now)
	}
	for _, cred := range g.creds {
		if cred.Kind != KindPasskey || cred.User != name || !bytes.Equal(cred.Passkey.ID, pc.ID) {
			continue
		}
		next := *cred
		next.Passkey, next.Used = pc, now.UTC()
		if err := g.write(credOp(&next)); err != nil {
			return Session{}, err
		}
		g.creds[next.ID] = &next
		return g.session(&next, now), nil
	}
	return Session{}, g.failed(ctx, a, name, now)
}
