package gate

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"sync"
	"time"

	"github.com/go-webauthn/webauthn/webauthn"
)

// A ceremony is a sign-in or an enrollment under way: what the server must
// remember between the two requests of a WebAuthn ceremony (the challenge),
// and an enrollment's user and TOTP secret. Ceremonies live in memory only,
// keyed by a random id the browser holds in a cookie, at most
// MaxCeremonies at once; when full, expired ones go first, then a new one is
// refused. A ceremony ends with its first finish, right or wrong.
type ceremony struct {
	kind       int
	user       string // enrollment: the user enrolled
	totpSecret string // enrollment: the secret shown, until confirmed
	handle     []byte // enrollment: the WebAuthn user handle
	wa         *webauthn.SessionData
	expires    time.Time
}

const (
	cerEnroll = iota
	cerLogin
)

// MaxCeremonies bounds the ceremonies under way.
const MaxCeremonies = 10000

// loginTTL is how long a sign-in ceremony waits for the authenticator.
const loginTTL = 5 * time.Minute

// ErrCeremony says the ceremony is unknown, over or of another kind.
var ErrCeremony = errors.New("sign-in or enrollment expired; start again")

type ceremonies struct {
	mu sync.Mutex
	m  map[string]*ceremony
}

func newCeremonies() *ceremonies { return &ceremonies{m: map[string]*ceremony{}} }

func (cs *ceremonies) put(c *ceremony, now time.Time) (string, error) {
	var raw [18]byte
	_, _ = rand.Read(raw[:])
	id := base64.RawURLEncoding.EncodeToString(raw[:])
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if len(cs.m) >= MaxCeremonies {
		for k, o := range cs.m {
			if !now.Before(o.expires) {
				delete(cs.m, k)
			}
		}
		if len(cs.m) >= MaxCeremonies {
			return "", errors.New("too many sign-ins under way")
		}
	}
	cs.m[id] = c
	return id, nil
}

// get returns the ceremony id of kind, still in force at now.
func (cs *ceremonies) get(id string, kind int, now time.Time) (*ceremony, error) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	c := cs.m[id]
	if c == nil || c.kind != kind || !now.Before(c.expires) {
		return nil, ErrCeremony
	}
	return c, nil
}

// take removes and returns the ceremony id of kind, in force at now.
func (cs *ceremonies) take(id string, kind int, now time.Time) (*ceremony, error) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	c := cs.m[id]
	if c == nil || c.kind != kind {
		return nil, ErrCeremony
	}
	delete(cs.m, id)
	if !now.Before(c.expires) {
		return nil, ErrCeremony
	}
	return c, nil
}

// update replaces what ceremony id holds, under the lock.
func (cs *ceremonies) update(id string, f func(*ceremony)) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if c := cs.m[id]; c != nil {
		f(c)
	}
}
