package kernel

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/testproc"
)

// netns creates a network namespace for one test and returns an open fd of
// it; both go at cleanup. Needs root and ip(8); nft(8) reads the result.
func netns(t *testing.T) (name string, fd int) {
	t.Helper()
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			testproc.Require(t, tool+" not found; install with: apt-get install iproute2 nftables")
		}
	}
	if os.Geteuid() != 0 {
		testproc.Require(t, "network namespaces need root")
	}
	name = fmt.Sprintf("doorman-k%d", os.Getpid())
	if b, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, b)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	f, err := os.Open("/run/netns/" + name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return name, int(f.Fd())
}

func nft(t *testing.T, ns string, args ...string) string {
	t.Helper()
	b, err := exec.Command("ip", append([]string{"netns", "exec", ns, "nft"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("nft %s: %v: %s", strings.Join(args, " "), err, b)
	}
	return string(b)
}

// setElements lists a set's elements as nft prints them ("192.0.2.1",
// "198.51.100.0/24", "192.0.2.2-192.0.2.3").
func setElements(t *testing.T, ns, table, set string) []string {
	t.Helper()
	out, err := testproc.NftSet([]byte(nft(t, ns, "-j", "list", "set", "inet", table, set)))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func ban(key string, d time.Duration, count int, now time.Time) decide.Ban {
	return decide.Ban{Key: netip.MustParsePrefix(key), Until: now.Add(d), Count: count}
}

func TestTableInNamespace(t *testing.T) {
	ns, fd := netns(t)
	// Another table, which doorman must leave alone.
	nft(t, ns, "add", "table", "inet", "other")
	nft(t, ns, "add", "set", "inet", "other", "s", "{ type ipv4_addr; }")
	nft(t, ns, "add", "element", "inet", "other", "s", "{ 203.0.113.9 }")

	tb, err := Open(Options{Name: "doorman_t", Hooks: []string{"input", "forward"}, Ports: []uint16{80, 443}, MinCount: 2,
		Max: 1000, NeverBan: []netip.Prefix{netip.MustParsePrefix("198.51.100.7/32")}, NetNS: fd})
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	now := time.Now()
	bans := []decide.Ban{
		ban("192.0.2.1/32", time.Hour, 2, now),
		ban("192.0.2.2/32", time.Hour, 1, now), // under DOORMAN_NFT_MIN_COUNT
		ban("198.51.100.0/24", time.Hour, 2, now),
		ban("198.51.100.9/32", 2*time.Hour, 2, now), // outlasts its range: cut out of it
		ban("2001:db8::/64", time.Hour, 3, now),
		{Key: netip.MustParsePrefix("203.0.113.0/28"), Until: now.Add(time.Hour), Manual: true},
	}
	if err := tb.Rebuild(bans, now); err != nil {
		t.Fatal(err)
	}
	if testing.Verbose() {
		t.Log(nft(t, ns, "list", "table", "inet", "doorman_t"))
	}
	want4 := sorted("192.0.2.1", "198.51.100.0/29", "198.51.100.8", "198.51.100.9", "198.51.100.10/31", "198.51.100.12/30",
		"198.51.100.16/28", "198.51.100.32/27", "198.51.100.64/26", "198.51.100.128/25", "203.0.113.0/28")
	if got := setElements(t, ns, "doorman_t", "bans4"); !slices.Equal(got, want4) {
		t.Fatalf("bans4 after rebuild: got %v, want %v", got, want4)
	}
	if got, want := setElements(t, ns, "doorman_t", "bans6"), []string{"2001:db8::/64"}; !slices.Equal(got, want) {
		t.Fatalf("bans6: got %v, want %v", got, want)
	}
	if got, want := setElements(t, ns, "doorman_t", "never_ban4"), []string{"198.51.100.7"}; !slices.Equal(got, want) {
		t.Fatalf("never_ban4: got %v, want %v", got, want)
	}
	if !tb.Holds(bans[0]) || tb.Holds(bans[1]) || !tb.Holds(bans[5]) {
		t.Fatalf("Holds: got %v %v %v, want true false true", tb.Holds(bans[0]), tb.Holds(bans[1]), tb.Holds(bans[5]))
	}

	t.Run("apply", func(t *testing.T) {
		err := tb.Apply([]decide.Ban{ban("192.0.2.5/32", time.Hour, 2, now), ban("192.0.2.1/32", 3*time.Hour, 3, now)},
			[]netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}, now)
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"192.0.2.1", "192.0.2.5", "198.51.100.9", "203.0.113.0/28"}
		if got := setElements(t, ns, "doorman_t", "bans4"); !slices.Equal(got, want) {
			t.Fatalf("bans4 after apply: got %v, want %v", got, want)
		}
		if err := tb.Apply([]decide.Ban{ban("192.0.2.0/24", time.Hour, 2, now)}, nil, now); err != nil {
			t.Fatal(err)
		}
		want = sorted("192.0.2.0", "192.0.2.1", "192.0.2.2/31", "192.0.2.4/30", "192.0.2.8/29", "192.0.2.16/28", "192.0.2.32/27",
			"192.0.2.64/26", "192.0.2.128/25", "198.51.100.9", "203.0.113.0/28")
		if got := setElements(t, ns, "doorman_t", "bans4"); !slices.Equal(got, want) {
			t.Fatalf("bans4 after a range over a longer unit ban: got %v, want %v", got, want)
		}
	})

	t.Run("check repairs a flushed set", func(t *testing.T) {
		before := setElements(t, ns, "doorman_t", "bans4")
		nft(t, ns, "flush", "set", "inet", "doorman_t", "bans4")
		nft(t, ns, "add", "element", "inet", "doorman_t", "bans6", "{ 2001:db8:1::/48 timeout 1h }")
		cur := append(bans, ban("192.0.2.5/32", time.Hour, 2, now), ban("192.0.2.1/32", 3*time.Hour, 3, now), ban("192.0.2.0/24", time.Hour, 2, now))
		cur = slices.DeleteFunc(cur, func(b decide.Ban) bool { return b.Key.String() == "198.51.100.0/24" })
		drift, err := tb.Check(cur, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if drift != len(before)+1 {
			t.Errorf("drift: got %d, want %d", drift, len(before)+1)
		}
		if got := setElements(t, ns, "doorman_t", "bans4"); !slices.Equal(got, before) {
			t.Fatalf("bans4 after check: got %v, want %v", got, before)
		}
		if got, want := setElements(t, ns, "doorman_t", "bans6"), []string{"2001:db8::/64"}; !slices.Equal(got, want) {
			t.Fatalf("bans6 after check: got %v, want %v", got, want)
		}
		if drift, err := tb.Check(cur, time.Now()); err != nil || drift != 0 {
			t.Fatalf("second check: drift %d, err %v; want 0, nil", drift, err)
		}
		nft(t, ns, "flush", "chain", "inet", "doorman_t", "input")
		if _, err := tb.Check(cur, time.Now()); err != nil {
			t.Fatal(err)
		}
		if out := nft(t, ns, "list", "chain", "inet", "doorman_t", "input"); !strings.Contains(out, "@bans4") {
			t.Fatalf("chain after check of a flushed chain:\n%s", out)
		}
	})

	t.Run("an element ends with its ban", func(t *testing.T) {
		now := time.Now()
		if err := tb.Apply([]decide.Ban{ban("203.0.113.200/32", 1500*time.Millisecond, 2, now)}, nil, now); err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(setElements(t, ns, "doorman_t", "bans4"), "203.0.113.200") {
			t.Fatal("203.0.113.200 not in bans4")
		}
		deadline := time.Now().Add(10 * time.Second)
		for slices.Contains(setElements(t, ns, "doorman_t", "bans4"), "203.0.113.200") {
			if time.Now().After(deadline) {
				t.Fatal("203.0.113.200 still in bans4 10s after its ban ended")
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	if out := nft(t, ns, "list", "set", "inet", "other", "s"); !strings.Contains(out, "203.0.113.9") {
		t.Fatalf("the other table changed:\n%s", out)
	}
	if err := tb.Remove(); err != nil {
		t.Fatal(err)
	}
	if out := nft(t, ns, "list", "tables"); strings.Contains(out, "doorman_t") || !strings.Contains(out, "other") {
		t.Fatalf("tables after Remove:\n%s", out)
	}
}

func sorted(ss ...string) []string {
	slices.Sort(ss)
	return ss
}
