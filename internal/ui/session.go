package ui

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"strings"
	"sync"
	"time"
)

// SessionTTL is how long a login lasts.
const SessionTTL = 12 * time.Hour

// MaxSessions bounds the sessions held; a new login past it ends the one
// that expires first.
const MaxSessions = 1000

// session is the server-side state of one login. The cookie holds only its
// random id and an HMAC of it, never the API token.
type session struct {
	csrf    string // the token every state-changing form must carry
	expires time.Time
	flash   string // a message for the next page view
}

// sessions holds the logins of this process. The HMAC key is random per
// process: a restart ends every session. Safe for concurrent use.
type sessions struct {
	key []byte
	mu  sync.Mutex
	m   map[string]*session
}

func newSessions() *sessions {
	return &sessions{key: randomBytes(32), m: map[string]*session{}}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("crypto/rand: " + err.Error()) // never returns an error on Linux
	}
	return b
}

func (s *sessions) sign(id string) string {
	mac := hmac.New(sha256.New, s.key)
	mac.Write([]byte(id))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// create starts a session and returns the cookie value.
func (s *sessions) create(now time.Time) string {
	id := base64.RawURLEncoding.EncodeToString(randomBytes(24))
	ses := &session{csrf: base64.RawURLEncoding.EncodeToString(randomBytes(24)), expires: now.Add(SessionTTL)}
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, v := range s.m {
		if !now.Before(v.expires) {
			delete(s.m, k)
		}
	}
	if len(s.m) >= MaxSessions {
		var oldest string
		for k, v := range s.m {
			if oldest == "" || v.expires.Before(s.m[oldest].expires) {
				oldest = k
			}
		}
		delete(s.m, oldest)
	}
	s.m[id] = ses
	return id + "." + s.sign(id)
}

// lookup returns a copy of the session of a cookie value, if it is signed,
// known and not expired.
func (s *sessions) lookup(cookie string, now time.Time) (id string, ses session, ok bool) {
	id, sig, found := strings.Cut(cookie, ".")
	if !found || id == "" || !hmac.Equal([]byte(sig), []byte(s.sign(id))) {
		return "", session{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.m[id]
	if !ok {
		return "", session{}, false
	}
	if !now.Before(p.expires) {
		delete(s.m, id)
		return "", session{}, false
	}
	return id, *p, true
}

// takeFlash returns the session's message and clears it.
func (s *sessions) takeFlash(id string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.m[id]
	if !ok {
		return ""
	}
	f := p.flash
	p.flash = ""
	return f
}

func (s *sessions) setFlash(id, msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.m[id]; ok {
		p.flash = msg
	}
}

func (s *sessions) end(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, id)
}

// checkCSRF reports whether got is the session's CSRF token.
func checkCSRF(ses session, got string) bool {
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(ses.csrf)) == 1
}
