package learn

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/gaissmai/bart"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/accesslog"
	"github.com/doorman/doorman/internal/engine"
	"github.com/doorman/doorman/internal/requestid"
	"github.com/doorman/doorman/internal/testproc"
)

type rig struct {
	l     *Listener
	local *engine.Local
	set   *metrics.Set
	log   *bytes.Buffer
	send  func(t *testing.T, d string)
	seen  *requestid.Seen
	now   time.Time
}

func newRig(t *testing.T, network string) *rig {
	t.Helper()
	p := decide.Policy{MaxFailures: 5, FindTime: 10 * time.Minute, BanTime: time.Hour, BanFactor: 2,
		MaxBanTime: 168 * time.Hour, IPv4Prefix: 32, IPv6Prefix: 64}
	core := decide.New(p, nil, 1000, 1000)
	r := &rig{set: metrics.NewSet(), log: new(bytes.Buffer), now: time.Now()}
	log := slog.New(slog.NewTextHandler(r.log, nil))
	r.local = engine.NewLocal(core, nil, log, engine.NewMetrics(core.Stats, false, time.Now))
	rules, err := accesslog.ParseRules("django /admin/login/; status /login")
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:0"
	if network == "unixgram" {
		addr = filepath.Join(t.TempDir(), "learn.sock")
	}
	trusted := new(bart.Lite)
	trusted.Insert(netip.MustParsePrefix("127.0.0.0/8"))
	r.seen = requestid.New(100, time.Minute)
	r.l, err = Listen(Options{Network: network, Address: addr, Rules: rules, Trusted: trusted, Local: r.local,
		Seen: r.seen, Metrics: r.set, Log: log, Now: time.Now})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { r.l.Run(); close(done) }()
	t.Cleanup(func() { r.l.Close(); <-done })
	c, err := net.Dial(network, r.l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r.send = func(t *testing.T, d string) {
		t.Helper()
		if _, err := c.Write([]byte(d)); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// counter reads one series of the listener's set.
func (r *rig) counter(name string) int {
	var b bytes.Buffer
	r.set.WritePrometheus(&b)
	for line := range strings.SplitSeq(b.String(), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			var n int
			fmt.Sscan(v, &n)
			return n
		}
	}
	return -1
}

// handled is how many datagrams were dropped, ignored or booked.
func (r *rig) handled() int {
	n := r.counter("doorman_learn_ignored_total") + r.counter("doorman_learn_failures_total") + r.counter("doorman_learn_successes_total")
	for _, why := range []string{"oversized", "malformed", "unknown", "no_client", "not_loopback", "request_id"} {
		n += r.counter(`doorman_learn_dropped_total{why="` + why + `"}`)
	}
	return n
}

// waitRead waits until the listener has read and handled n datagrams.
func (r *rig) waitRead(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for r.counter("doorman_learn_records_total") < n || r.handled() < n {
		if time.Now().After(deadline) {
			t.Fatalf("read %d records, want %d", r.counter("doorman_learn_records_total"), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func record(client, uri string, status int) string {
	return recordID(client, uri, status, "")
}

func recordID(client, uri string, status int, id string) string {
	return fmt.Sprintf(`<190>Dec  3 09:04:39 nginx: {"client":"%s","method":"POST","host":"example.com","uri":"%s","status":"%d","request_id":"%s"}`,
		client, uri, status, id)
}

// TestDuplicates: a failure whose request id the webhook counted is not
// counted again; one the listener counted first is remembered for the
// webhook.
func TestDuplicates(t *testing.T) {
	r := newRig(t, "unixgram")
	ip := netip.MustParseAddr("192.0.2.8")
	const reported, learnedFirst = "0f3a9c1d2b4e5f60718293a4b5c6d7e8", "1f3a9c1d2b4e5f60718293a4b5c6d7e8"
	r.seen.First([]byte(reported), time.Now()) // the app's report
	r.send(t, recordID(ip.String(), "/admin/login/", 200, reported))
	r.send(t, recordID(ip.String(), "/admin/login/", 200, learnedFirst))
	r.waitRead(t, 1) // the duplicate is neither booked nor ignored
	deadline := time.Now().Add(5 * time.Second)
	for r.counter("doorman_learn_failures_total") < 1 || r.counter("doorman_learn_duplicates_total") < 1 {
		if time.Now().After(deadline) {
			t.Fatalf("failures %d, duplicates %d", r.counter("doorman_learn_failures_total"), r.counter("doorman_learn_duplicates_total"))
		}
		time.Sleep(time.Millisecond)
	}
	if got := r.local.Explain(context.Background(), ip, time.Now()).Failures; got != 1 {
		t.Errorf("failures = %d, want 1", got)
	}
	if r.seen.First([]byte(learnedFirst), time.Now()) {
		t.Error("the learned record's id was not remembered for the webhook")
	}
}

func TestFailuresBan(t *testing.T) {
	for _, network := range []string{"unixgram", "udp"} {
		t.Run(network, func(t *testing.T) {
			r := newRig(t, network)
			ip := netip.MustParseAddr("192.0.2.7")
			sent := 0
			send := func(d string) { r.send(t, d); sent++ }
			for range 4 {
				send(record(ip.String(), "/admin/login/", 200))
			}
			send(record(ip.String(), "/admin/login/", 302)) // success: the count starts again
			for range 4 {
				send(record(ip.String(), "/admin/login/?next=/admin/", 200))
			}
			send(record(ip.String(), "/admin/login/", 403)) // CSRF: nothing
			send(record(ip.String(), "/other/", 200))       // not a login form
			r.waitRead(t, sent)
			if v := r.local.Decide(ip, time.Now()); !v.Allow {
				t.Fatalf("banned after 4 failures since a success: %v", v.Reason)
			}
			send(record(ip.String(), "/%61dmin/login/", 200))
			r.waitRead(t, sent)
			if v := r.local.Decide(ip, time.Now()); v.Allow || v.Reason != decide.Banned {
				t.Fatalf("verdict after 5 failures = %+v, want banned", v)
			}
			for name, want := range map[string]int{"doorman_learn_failures_total": 9, "doorman_learn_successes_total": 1,
				"doorman_learn_ignored_total": 2, "doorman_learn_parsed_total": 12} {
				if got := r.counter(name); got != want {
					t.Errorf("%s = %d, want %d", name, got, want)
				}
			}
			// The engine's commit writes one failure line per failure; the
			// listener writes none of its own.
			if got := strings.Count(r.log.String(), `msg=failure ip=192.0.2.7 key=192.0.2.7/32 failures=`); got != 9 {
				t.Errorf("%d failure lines, want 9:\n%s", got, r.log)
			}
			if got := strings.Count(r.log.String(), " source=learned\n"); got != 10 {
				t.Errorf("%d lines say source=learned, want 10 (9 failures, 1 ban):\n%s", got, r.log)
			}
			if !strings.Contains(r.log.String(), "msg=ban ip=192.0.2.7 ") {
				t.Errorf("no ban line:\n%s", r.log)
			}
		})
	}
}

// TestHostileInput: nothing but well-formed records changes anything, and
// each bad datagram is counted under its reason.
func TestHostileInput(t *testing.T) {
	r := newRig(t, "unixgram")
	forged := `{"client":"198.51.100.1","method":"POST","uri":"/admin/login/","status":"200","client":"192.0.2.9"}`
	inputs := []struct{ d, why string }{
		{strings.Repeat("A", accesslog.MaxRecord+100), "oversized"},
		{string(make([]byte, 64<<10-1)), "oversized"},
		{"\x00\x01\x02\xff<>", "malformed"},
		{record("192.0.2.9", "/admin/login/", 200)[:60], "malformed"},
		{forged, "malformed"},
		{`{"msg":"hello"}`, "unknown"},
		{record("192.0.2.9:1", "/admin/login/", 200), "no_client"},
		{record("192.0.2.9\x00", "/admin/login/", 200), "malformed"},
		{strings.ReplaceAll(record("192.0.2.9", "/admin/login/\u2028\\n", 200), `"x"`, `"\u0000"`), ""},
		{recordID("192.0.2.9", "/admin/login/", 200, `a\u001bb`), "request_id"},
		{recordID("192.0.2.9", "/admin/login/", 200, "a b"), "request_id"},
		{recordID("192.0.2.9", "/admin/login/", 200, strings.Repeat("a", 129)), "request_id"},
	}
	for i, in := range inputs {
		r.send(t, in.d)
		r.waitRead(t, i+1)
	}
	for _, why := range []string{"oversized", "malformed", "unknown", "no_client", "request_id"} {
		want := 0
		for _, in := range inputs {
			if in.why == why {
				want++
			}
		}
		if got := r.counter(`doorman_learn_dropped_total{why="` + why + `"}`); got != want {
			t.Errorf("dropped %s = %d, want %d", why, got, want)
		}
	}
	if st := r.local.Stats(time.Now()); st.Tracked != 0 || st.ActiveBans != 0 {
		t.Errorf("hostile input changed the tables: %+v", st)
	}
	if r.counter("doorman_learn_ignored_total") != 1 {
		t.Errorf("the record with escapes in its path was not read and ignored")
	}
}

// TestUDPFromAnotherHost: a datagram whose sender is not loopback is dropped
// before it is parsed. The listener binds every address here so that one
// can be sent from a non-loopback source.
func TestUDPFromAnotherHost(t *testing.T) {
	ifaces, _ := net.InterfaceAddrs()
	var other net.IP
	for _, a := range ifaces {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
			other = n.IP
		}
	}
	if other == nil {
		testproc.Require(t, "no non-loopback IPv4 address on this host")
	}
	set := metrics.NewSet()
	rules, _ := accesslog.ParseRules("django /admin/login/")
	core := decide.New(decide.Policy{MaxFailures: 1, FindTime: time.Minute, BanTime: time.Hour, BanFactor: 1, MaxBanTime: time.Hour,
		IPv4Prefix: 32, IPv6Prefix: 64}, nil, 10, 10)
	local := engine.NewLocal(core, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), engine.NewMetrics(core.Stats, false, time.Now))
	l, err := Listen(Options{Network: "udp", Address: other.String() + ":0", Rules: rules, Trusted: new(bart.Lite), Local: local,
		Metrics: set, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: time.Now})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { l.Run(); close(done) }()
	defer func() { l.Close(); <-done }()
	c, err := net.DialUDP("udp", &net.UDPAddr{IP: other}, l.Addr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte(record("192.0.2.1", "/admin/login/", 200)))
	r := &rig{set: set}
	r.waitRead(t, 1)
	if got := r.counter(`doorman_learn_dropped_total{why="not_loopback"}`); got != 1 {
		t.Errorf("not_loopback drops = %d, want 1", got)
	}
	if v := local.Decide(netip.MustParseAddr("192.0.2.1"), time.Now()); !v.Allow {
		t.Errorf("a record from another host banned its client")
	}
}

func TestStaleSocketReplaced(t *testing.T) {
	path := filepath.Join(t.TempDir(), "learn.sock")
	c, err := net.ListenPacket("unixgram", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := listenUnixgram(path); err == nil || !strings.Contains(err.Error(), "another process is listening") {
		t.Fatalf("listening over a live socket: %v", err)
	}
	c.Close() // the file stays: a stale socket
	c3, err := listenUnixgram(path)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	c3.Close()
}
