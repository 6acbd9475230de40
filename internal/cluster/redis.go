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

// ban reads the hash held under key.
func (h banHash) ban(key netip.Prefix) (decide.Ban, bool) {
	until, _ := strconv.ParseInt(h.get("until"), 10, 64)
	if until == 0 {
		return decide.Ban{}, false
	}
	b := decide.Ban{Key: key, Until: time.UnixMilli(until).UTC(), Manual: h.get("manual") == "1", Range: h.get("manual") == "2", Note: h.get("note")}
	b.Count, _ = strconv.Atoi(h.get("count"))
	b.Failures, _ = strconv.Atoi(h.get("failures"))
	return b, true
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
