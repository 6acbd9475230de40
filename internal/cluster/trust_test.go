package cluster

import (
	"encoding/hex"
	"net/netip"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/doorman/doorman/decide"
)

// forged is one change written to Redis by hand, as whoever can write there
// could: published on the channel, or stored in the hashes a resync reads.
type forged struct {
	name string
	m    message
	raw  string // published instead of m when set (not JSON)
	kind string // the refusal expected
	// manual is the ban hash's manual field ("" for m's reason); locks and
	// device locks go to their own hashes.
	manual string
	// inForce reports whether the change took effect on n.
	inForce func(n *node, a *Accounts, now time.Time) bool
}

// forgedChanges are the cases; token is a device token of carol's, device
// its DeviceID in hex.
func forgedChanges(now time.Time, token, device string) []forged {
	far := now.Add(200 * 365 * 24 * time.Hour).UnixMilli()
	hour := now.Add(time.Hour).UnixMilli()
	bannedAt := func(ip string) func(*node, *Accounts, time.Time) bool {
		return func(n *node, _ *Accounts, now time.Time) bool { return banned(n.core, ip, now) }
	}
	return []forged{
		{name: "200-year manual ban", kind: refuseLong, inForce: bannedAt("198.51.100.1"),
			m: message{Op: "ban", Key: "198.51.100.1/32", Until: far, Count: 1, Manual: true}},
		{name: "200-year failures ban", kind: refuseLong, inForce: bannedAt("198.51.100.2"),
			m: message{Op: "ban", Key: "198.51.100.2/32", Until: far, Count: 1, Failures: 5}},
		{name: "10.0.0.0/8 with reason failures", kind: refuseShape, inForce: bannedAt("10.1.2.3"),
			m: message{Op: "ban", Key: "10.0.0.0/8", Until: hour, Count: 1, Failures: 5}},
		{name: "range ban of a unit", kind: refuseShape, inForce: bannedAt("198.51.100.3"),
			m: message{Op: "ban", Key: "198.51.100.3/32", Until: hour, Count: 1, Range: true}},
		{name: "wider than /8", kind: refuseWide, inForce: bannedAt("11.1.2.3"),
			m: message{Op: "ban", Key: "10.0.0.0/7", Until: hour, Count: 1, Manual: true}},
		{name: "unknown reason", kind: refuseReason, manual: "7", inForce: bannedAt("198.51.100.4"),
			m: message{Op: "ban", Key: "198.51.100.4/32", Until: hour, Count: 1, Manual: true, Range: true}},
		{name: "200-year lock", kind: refuseLong,
			m:       message{Op: opLock, Key: "admin", Until: far, Count: 1, Failures: 4},
			inForce: func(_ *node, a *Accounts, now time.Time) bool { return !a.Attempt("admin", "", now).Allow }},
		{name: "unnormalised username", kind: refuseUsername,
			m: message{Op: opLock, Key: "ADMIN ", Until: hour, Count: 1, Failures: 4},
			inForce: func(_ *node, a *Accounts, now time.Time) bool {
				return slices.ContainsFunc(a.Locks(now), func(l decide.Lock) bool { return l.Username == "ADMIN " })
			}},
		{name: "200-year device lock", kind: refuseLong,
			m: message{Op: opDLock, Key: device, Until: far},
			// carol is locked (validly): her token exempts unless locked itself.
			inForce: func(_ *node, a *Accounts, now time.Time) bool { return !a.Attempt("carol", token, now).Allow }},
		{name: "not JSON", kind: refuseMalformed, raw: `{"op":"ban","key":`},
	}
}

// validChanges are applied, published after (or stored beside) the forged ones.
func validChanges(now time.Time) []message {
	return []message{
		{Op: "ban", Key: "198.51.100.9/32", Until: now.Add(time.Hour).UnixMilli(), Count: 1, Failures: 5, IP: "198.51.100.9"},
		{Op: opLock, Key: "carol", Until: now.Add(time.Hour).UnixMilli(), Count: 1, Failures: 4},
	}
}

// carolToken returns a device token for carol and its DeviceID in hex.
func carolToken(t *testing.T, a *Accounts) (token, device string) {
	t.Helper()
	now := time.Now()
	tok, err := a.SucceedAccount(ctx, "carol", "", now)
	if err != nil || tok.Token == "" {
		t.Fatalf("token: %+v %v", tok, err)
	}
	dev := a.acc.Device("carol", tok.Token, now)
	if !dev.Valid {
		t.Fatal("the token just issued is not valid")
	}
	return tok.Token, hex.EncodeToString(dev.ID[:])
}

func checkRefused(t *testing.T, n *node, a *Accounts, cases []forged, now time.Time) {
	t.Helper()
	for _, tc := range cases {
		if tc.inForce != nil && tc.inForce(n, a, now) {
			t.Errorf("%s: in force", tc.name)
		}
	}
	if !banned(n.core, "198.51.100.9", now) {
		t.Error("the valid ban is not in force")
	}
	if a.Attempt("carol", "", now).Allow {
		t.Error("the valid lock is not in force")
	}
	// One warn line a minute per kind, however many of that kind came.
	kinds := map[string]bool{}
	for _, tc := range cases {
		kinds[tc.kind] = true
	}
	for k := range kinds {
		if got := n.log.count("level=WARN", "not applied", "refused="+k+" "); got != 1 {
			t.Errorf("%d warn lines refused=%s, want 1\n%s", got, k, n.log)
		}
	}
}

// Changes published on the channel by anyone who can write to Redis pass
// the bounds of local input: none of the forged ones is in force, each is
// counted, the warnings are one per kind, and valid messages still apply.
func TestForgedMessagesRefused(t *testing.T) {
	url, pfx := redisURL(t), prefix(t)
	n, a := startAccounts(t, url, pfx)
	rc := rawClient(t, url)
	now := time.Now()
	token, device := carolToken(t, a)
	cases := forgedChanges(now, token, device)
	before := n.c.refused.Get()
	for _, tc := range cases {
		payload := tc.raw
		if payload == "" {
			tc.m.Origin = "forger"
			payload, _ = jsonMessage(tc.m)
		}
		if err := rc.Publish(ctx, n.c.keys.channel(), payload).Err(); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range validChanges(now) {
		m.Origin = "peer"
		payload, _ := jsonMessage(m)
		if err := rc.Publish(ctx, n.c.keys.channel(), payload).Err(); err != nil {
			t.Fatal(err)
		}
	}
	// Messages are handled in order: once the last valid one is, all are.
	waitFor(t, "the valid lock", 3*time.Second, func() bool { return !a.Attempt("carol", "", now).Allow })
	checkRefused(t, n, a, cases, now)
	if got, want := n.c.refused.Get()-before, uint64(len(cases)); got != want {
		t.Errorf("doorman_cluster_refused_total +%d, want +%d", got, want)
	}
}

// The same changes stored in Redis's hashes are refused by the resync of a
// doorman that starts afterwards, and by a failure that finds a forged ban of
// its unit.
func TestForgedHashesRefused(t *testing.T) {
	url, pfx := redisURL(t), prefix(t)
	_, a := startAccounts(t, url, pfx) // sets the shared device key
	rc := rawClient(t, url)
	now := time.Now()
	token, device := carolToken(t, a)
	cases := forgedChanges(now, token, device)
	var stored []forged
	write := func(m message, manual string) {
		t.Helper()
		var key string
		var fields []any
		switch m.Op {
		case "ban":
			key = a.c.keys.of(netip.MustParsePrefix(m.Key))[keyBan]
			if manual == "" {
				manual = strconv.Itoa(kind(m.ban(netip.Prefix{})))
			}
			fields = []any{"until", m.Until, "count", m.Count, "failures", m.Failures, "manual", manual,
				"note", "", "ip", m.IP, "origin", "forger"}
		case opLock:
			key = a.akeys("a", m.Key)[1]
			fields = []any{"until", m.Until, "count", m.Count, "failures", m.Failures, "name", m.Key, "origin", "forger"}
		case opDLock:
			key = a.akeys("d", m.Key)[1]
			fields = []any{"until", m.Until, "count", 1, "failures", 3, "name", m.Key, "origin", "forger"}
		}
		if err := rc.HSet(ctx, key, fields...).Err(); err != nil {
			t.Fatal(err)
		}
		rc.Expire(ctx, key, time.Minute)
	}
	for _, tc := range cases {
		if tc.raw == "" {
			write(tc.m, tc.manual)
			stored = append(stored, tc)
		}
	}
	for _, m := range validChanges(now) {
		write(m, "")
	}
	// A failure of a unit whose forged ban Redis holds.
	failKey := netip.MustParseAddr("198.51.100.5")
	write(message{Op: "ban", Key: "198.51.100.5/32", Until: now.Add(200 * 365 * 24 * time.Hour).UnixMilli(), Count: 1}, "1")
	stored = append(stored, forged{name: "200-year ban found by a failure", kind: refuseLong,
		inForce: func(n *node, _ *Accounts, now time.Time) bool { return banned(n.core, failKey.String(), now) }})

	// A failure of an account whose forged lock Redis holds.
	write(message{Op: opLock, Key: "mallory", Until: now.Add(200 * 365 * 24 * time.Hour).UnixMilli(), Count: 1, Failures: 4}, "")
	stored = append(stored, forged{name: "200-year lock found by a failure", kind: refuseLong,
		inForce: func(_ *node, a *Accounts, now time.Time) bool { return !a.Attempt("mallory", "", now).Allow }})

	n, b := startAccounts(t, url, pfx) // its first resync has run
	if _, err := n.local.Fail(ctx, failKey, "", now); err != nil {
		t.Fatal(err)
	}
	if res, err := b.FailAccount(ctx, "mallory", "", now); err != nil || res.Locked {
		t.Fatalf("failure of mallory: %+v %v, want not locked", res, err)
	}
	checkRefused(t, n, b, stored, now)
	// Every resync refuses them again (each counted), so at least once each.
	if got, want := n.c.refused.Get(), uint64(len(stored)); got < want {
		t.Errorf("doorman_cluster_refused_total %d, want at least %d", got, want)
	}
}
