package decide

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"hash"
	"sync"
	"sync/atomic"
	"time"
)

// A gate session says that its holder signed in at doorman's gate with one
// credential (a passkey or a TOTP secret). Layout, 61 bytes, then unpadded
// base64url (82 characters):
//
//	version (1) = 1 | expires (8, unix seconds, big-endian) | credential (16) | epoch (4) | MAC (32)
//
// MAC is HMAC-SHA256 under the gate key of "doorman-gate\x00" and the first
// 29 bytes. A session is valid while its MAC is right, it has not expired,
// its credential is still registered and the credential's epoch is the
// session's: revoking the credential deletes it from the table, signing a
// user out everywhere raises the epoch of each of their credentials. So the
// revocation list is the credential table itself, bounded by MaxGateCredentials,
// and a revocation holds at the next check.
const (
	gateVersion  = 1
	gateHead     = 1 + 8 + 16 + 4
	gateRaw      = gateHead + sha256.Size
	GateTokenLen = (gateRaw*8 + 5) / 6 // 82
	// GateKeyMin is the shortest gate key accepted, in bytes.
	GateKeyMin = 32
	// MaxGateCredentials is the most credentials the gate holds.
	MaxGateCredentials = 10000
)

var (
	gateContext  = []byte("doorman-gate\x00")
	gateEncoding = base64.RawURLEncoding.Strict()
)

// GateCredID names one credential in sessions and in the table.
type GateCredID [16]byte

// GateEntry is what the table holds for a live credential.
type GateEntry struct {
	User  string // normalised username
	Epoch uint32 // sessions issued before the last sign-out everywhere carry a lower one
	// UserHeader is User as bytes, for a header the decision path sets
	// without allocating.
	UserHeader []byte
}

// Gate checks gate sessions: the key and the live credentials, each
// published whole through an atomic pointer, so Check takes no lock and
// does not allocate. Writers (SetKey, SetCredentials) serialize among
// themselves outside. The zero Gate has no key and accepts nothing.
type Gate struct {
	key  atomic.Pointer[gateKey]
	live atomic.Pointer[map[GateCredID]GateEntry]
}

// gateKey pools MACs with their scratch space: a slice handed to
// hash.Hash.Write escapes, so the bytes Check reads live in the pooled value
// instead of on its stack.
type gateKey struct{ macs sync.Pool }

type gateMAC struct {
	h   hash.Hash
	raw [gateRaw]byte
	sum [sha256.Size]byte
}

// SetKey replaces the gate key; sessions signed with another key stop being
// valid. The key must be at least GateKeyMin bytes.
func (g *Gate) SetKey(key []byte) error {
	if len(key) < GateKeyMin {
		return fmt.Errorf("gate key is %d bytes, want at least %d", len(key), GateKeyMin)
	}
	k := append([]byte(nil), key...)
	g.key.Store(&gateKey{macs: sync.Pool{New: func() any { return &gateMAC{h: hmac.New(sha256.New, k)} }}})
	return nil
}

// SetCredentials publishes the live credentials; the map is not changed after.
func (g *Gate) SetCredentials(live map[GateCredID]GateEntry) { g.live.Store(&live) }

// sign computes the MAC of m.raw's head into m.sum.
func (m *gateMAC) sign() []byte {
	m.h.Reset()
	m.h.Write(gateContext)
	m.h.Write(m.raw[:gateHead])
	return m.h.Sum(m.sum[:0])
}

// Issue returns a session for cred at epoch that expires at expires
// (rounded down to the second); "" without a key.
func (g *Gate) Issue(cred GateCredID, epoch uint32, expires time.Time) string {
	k := g.key.Load()
	if k == nil {
		return ""
	}
	m := k.macs.Get().(*gateMAC)
	defer k.macs.Put(m)
	raw := m.raw[:]
	raw[0] = gateVersion
	binary.BigEndian.PutUint64(raw[1:9], uint64(expires.Unix()))
	copy(raw[9:25], cred[:])
	binary.BigEndian.PutUint32(raw[25:29], epoch)
	copy(raw[gateHead:], m.sign())
	return gateEncoding.EncodeToString(raw)
}

// Check returns the entry of the credential token was issued for, when the
// token is a valid session at now. It does not allocate.
func (g *Gate) Check(token []byte, now time.Time) (GateEntry, bool) {
	k, live := g.key.Load(), g.live.Load()
	if k == nil || live == nil || len(token) != GateTokenLen {
		return GateEntry{}, false
	}
	m := k.macs.Get().(*gateMAC)
	defer k.macs.Put(m)
	raw := m.raw[:]
	if n, err := gateEncoding.Decode(raw, token); err != nil || n != gateRaw || raw[0] != gateVersion {
		return GateEntry{}, false
	}
	if !hmac.Equal(m.sign(), raw[gateHead:]) {
		return GateEntry{}, false
	}
	if int64(binary.BigEndian.Uint64(raw[1:9])) <= now.Unix() {
		return GateEntry{}, false
	}
	e, ok := (*live)[GateCredID(raw[9:25])]
	if !ok || e.Epoch != binary.BigEndian.Uint32(raw[25:29]) {
		return GateEntry{}, false
	}
	return e, true
}
