package cluster

import (
	"encoding/json"
	"fmt"
	"hash/maphash"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/engine"
)

// keyspace names doorman's Redis keys; see scripts.go for the layout.
type keyspace struct{ prefix string }

// of returns the KEYS of every script for ban key k, in the one order the
// scripts read them: ban, count, unban, fail. They share the hash tag {k},
// so a script touches one slot (Redis Cluster).
func (s keyspace) of(k netip.Prefix) []string {
	tag := ":{" + k.String() + "}"
	return []string{s.prefix + "ban" + tag, s.prefix + "count" + tag, s.prefix + "unban" + tag, s.prefix + "fail" + tag}
}

// Indexes into keyspace.of.
const (
	keyBan = iota
	keyCount
	keyUnban
	keyFail
)

func (s keyspace) channel() string { return s.prefix + "events" }

// banPattern matches every ban hash, for SCAN.
func (s keyspace) banPattern() string { return globEscape(s.prefix) + "ban:{*" }

// parse extracts K from PREFIX kind:{K}.
func (keyspace) parse(redisKey string) (netip.Prefix, bool) {
	i, j := strings.IndexByte(redisKey, '{'), strings.LastIndexByte(redisKey, '}')
	if i < 0 || j < i {
		return netip.Prefix{}, false
	}
	p, err := netip.ParsePrefix(redisKey[i+1 : j])
	return p, err == nil
}

// globEscape escapes the glob characters of a SCAN MATCH pattern.
func globEscape(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `?`, `\?`, `[`, `\[`, `]`, `\]`, `*`, `\*`)
	return r.Replace(s)
}

// message is what the scripts publish on the channel.
type message struct {
	Op       string `json:"op"` // ban, unban or success
	Key      string `json:"key"`
	IP       string `json:"ip"`
	Until    int64  `json:"until,omitempty"` // ms since the epoch
	Count    int    `json:"count,omitempty"`
	Failures int    `json:"failures,omitempty"`
	Manual   bool   `json:"manual,omitempty"`
	Range    bool   `json:"range,omitempty"`
	Note     string `json:"note,omitempty"`
	Origin   string `json:"origin"`
}

func (m message) ban(key netip.Prefix) decide.Ban {
	return decide.Ban{Key: key, Until: time.UnixMilli(m.Until).UTC(), Manual: m.Manual, Range: m.Range, Note: m.Note, Count: m.Count, Failures: m.Failures}
}

func jsonMessage(m message) (string, error) {
	b, err := json.Marshal(m)
	return string(b), err
}

// banHash is a ban hash as HGETALL returns it (a flat field, value list).
type banHash []string

func (h banHash) get(field string) string {
	for i := 0; i+1 < len(h); i += 2 {
		if h[i] == field {
			return h[i+1]
		}
	}
	return ""
}

// message reads the hash held under key as the message its script
// published with it (save writes both from one value); false when it holds
// no ban.
func (h banHash) message(key netip.Prefix) (message, bool) {
	until, _ := strconv.ParseInt(h.get("until"), 10, 64)
	if until == 0 {
		return message{}, false
	}
	m := message{Op: "ban", Key: key.String(), IP: h.get("ip"), Until: until, Note: h.get("note"), Origin: h.get("origin")}
	m.setKind(h.get("manual"))
	m.Count, _ = strconv.Atoi(h.get("count"))
	m.Failures, _ = strconv.Atoi(h.get("failures"))
	return m, true
}

// setKind sets m's reason from a ban hash's manual field: 0 failures, 1
// manual, 2 range; any other value sets both Manual and Range, a reason no
// doorman makes, which vet refuses.
func (m *message) setKind(manual string) {
	switch manual {
	case "0":
		m.Manual, m.Range = false, false
	case "1":
		m.Manual, m.Range = true, false
	case "2":
		m.Manual, m.Range = false, true
	default:
		m.Manual, m.Range = true, true
	}
}

// ban reads the hash held under key.
func (h banHash) ban(key netip.Prefix) (decide.Ban, bool) {
	m, ok := h.message(key)
	return m.ban(key), ok
}

// Refusals: why a change read from Redis is not applied. Each is counted in
// doorman_cluster_refused_total and logged at warn, at most once a minute per
// kind.
const (
	refuseMalformed = "malformed"      // not JSON, or a key or device ID that does not parse
	refuseReason    = "unknown-reason" // a ban both manual and range (a hash: manual not 0, 1 or 2)
	refuseWide      = "too-wide"       // wider than /8 (IPv4) or /32 (IPv6)
	refuseShape     = "reason-width"   // a failures ban of other than a unit, a range ban of a unit or less
	refuseLong      = "too-long"       // ends later than any local change could make it
	refuseUsername  = "username"       // not a username as NormalizeUsername leaves it
	refuseFull      = "table-full"     // the ban table is full of active manual bans
)

// skew is how far a peer's clock may run ahead of this doorman's: the ends
// of bans and locks are absolute times read on the peer's clock.
const skew = time.Minute

// vet returns why m, a change read from Redis, must not be applied here, or
// "" when it may be: m is a message from the channel, or a hash read at a
// resync in the same form. Whoever can write to Redis can publish anything
// (docs/cluster.md, "Trust"), so what is learned keeps the bounds of local
// input:
//   - a ban is no wider than /8 (IPv4) or /32 (IPv6); reason failures bans
//     a ban unit only, reason range only a key wider than a unit (as
//     decide's range escalation makes them), manual any key;
//   - it ends no later than this doorman could make it end, plus skew: a
//     manual ban engine.MaxManualBan from now, any other MaxBanTime with
//     the jitter; an account lock MaxLockTime, a device lock LockTime;
//   - a username is one NormalizeUsername leaves as it is.
//
// Account ops pass when accounts are off here: nothing applies them.
func (c *Cluster) vet(m message, now time.Time) string {
	left := time.UnixMilli(m.Until).Sub(now) - skew
	switch m.Op {
	case "ban", "unban", "success":
		key, err := netip.ParsePrefix(m.Key)
		if err != nil {
			return refuseMalformed
		}
		if m.Op != "ban" {
			return ""
		}
		key = c.core.Normalize(key)
		p := c.policy
		unit, widest := p.IPv6Prefix, decide.WidestIPv6
		if key.Addr().Is4() {
			unit, widest = p.IPv4Prefix, decide.WidestIPv4
		}
		longest := time.Duration(float64(p.MaxBanTime) * (1 + p.Jitter))
		if m.Manual {
			longest = engine.MaxManualBan
		}
		switch {
		case m.Manual && m.Range:
			return refuseReason
		case key.Bits() < widest:
			return refuseWide
		case m.Range && key.Bits() >= unit, !m.Manual && !m.Range && key.Bits() != unit:
			return refuseShape
		case left > longest:
			return refuseLong
		}
	case opLock, opUnlock, opDLock:
		a := c.accounts.Load()
		if a == nil {
			return ""
		}
		p := a.mem().Policy()
		if m.Op == opDLock {
			if _, ok := deviceID(m.Key); !ok {
				return refuseMalformed
			}
			if left > p.LockTime {
				return refuseLong
			}
			return ""
		}
		if n, err := decide.NormalizeUsername(m.Key); err != nil || n != m.Key || n == "" {
			return refuseUsername
		}
		if m.Op == opLock && left > p.MaxLockTime {
			return refuseLong
		}
	}
	return ""
}

// admit reports whether m, read from Redis, may be applied; a change vet
// refuses is counted and logged.
func (c *Cluster) admit(m message, now time.Time) bool {
	if r := c.vet(m, now); r != "" {
		c.refuse(r, m, now)
		return false
	}
	return true
}

// refuse counts a change read from Redis that is not applied, and logs it at
// warn, at most once a minute per kind of refusal: a flood of forged
// messages costs one line a minute each.
func (c *Cluster) refuse(kind string, m message, now time.Time) {
	c.refused.Inc()
	held, ok := c.refusals.Allow(kind, now)
	if !ok {
		return
	}
	attrs := []any{"refused", kind, "op", clip(m.Op), "key", clip(m.Key), "origin", clip(m.Origin), "since_last_logged", held}
	if m.Until != 0 {
		attrs = append(attrs, "until", time.UnixMilli(m.Until).UTC().Format(time.RFC3339))
	}
	c.log.Warn("change from Redis not applied", attrs...)
}

// clip bounds a string read from Redis for a log line (which quotes it).
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

func ms(d time.Duration) int64 { return d.Milliseconds() }

// kind is a ban hash's manual field: 0 failures, 1 manual, 2 range.
func kind(b decide.Ban) int {
	switch {
	case b.Manual:
		return 1
	case b.Range:
		return 2
	}
	return 0
}

func flag(b bool) int {
	if b {
		return 1
	}
	return 0
}

func errOr(err error, n int) error {
	if err != nil {
		return err
	}
	return fmt.Errorf("unexpected reply of %d values", n)
}

var shardSeed = maphash.MakeSeed()

// keyLocks serialize, per ban key, an API call (Redis, then memory and the
// state file) with the sync loop applying a peer's change to that key, so a
// peer's unban published right after this instance's ban is never applied
// before the ban itself.
type keyLocks [64]sync.Mutex

func (l *keyLocks) lock(k netip.Prefix) (unlock func()) {
	m := &l[maphash.Comparable(shardSeed, k)%uint64(len(l))]
	m.Lock()
	return m.Unlock
}
