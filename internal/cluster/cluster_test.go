package cluster

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/engine"
	"github.com/doorman/doorman/internal/store"
	"github.com/doorman/doorman/internal/testproc"
)

var ctx = context.Background()

// Failures split across three instances, sent concurrently, ban at exactly
// the threshold: one ban per address, reported by the failure that crossed.
func TestThresholdAcrossInstances(t *testing.T) {
	url, pfx := redisURL(t), prefix(t)
	nodes := []*node{
		startNode(t, nodeOpt{url: url, prefix: pfx, waitUp: true}),
		startNode(t, nodeOpt{url: url, prefix: pfx, waitUp: true}),
		startNode(t, nodeOpt{url: url, prefix: pfx, waitUp: true}),
	}
	now := time.Now()
	const addrs = 20
	for i := range addrs {
		ip := netip.MustParseAddr(fmt.Sprintf("203.0.113.%d", i+1))
		var wg sync.WaitGroup
		results := make([]engine.Failed, testPolicy.MaxFailures)
		for j := range results {
			wg.Go(func() {
				res, err := nodes[j%len(nodes)].local.Fail(ctx, ip, "", now)
				if err != nil {
					t.Error(err)
				}
				results[j] = res
			})
		}
		wg.Wait()
		bans, counts := 0, map[int]int{}
		for _, r := range results {
			counts[r.Failures]++
			if r.Banned {
				bans++
				if r.Failures != testPolicy.MaxFailures || r.Ban.Count != 1 {
					t.Errorf("%v: crossing result %+v, want failures %d, count 1", ip, r, testPolicy.MaxFailures)
				}
			}
		}
		if bans != 1 {
			t.Errorf("%v: %d results say banned, want exactly 1 (%+v)", ip, bans, results)
		}
		for f := 1; f <= testPolicy.MaxFailures; f++ {
			if counts[f] != 1 {
				t.Errorf("%v: failure counts %v, want each of 1..%d once", ip, counts, testPolicy.MaxFailures)
				break
			}
		}
		for k, n := range nodes {
			waitFor(t, fmt.Sprintf("node %d bans %v", k, ip), 2*time.Second, func() bool { return banned(n.core, ip.String(), now) })
		}
	}
	waitFor(t, "ban lines", 2*time.Second, func() bool {
		total := 0
		for _, n := range nodes {
			total += n.log.count("msg=ban ", "source=cluster")
		}
		return total == addrs*(len(nodes)-1)
	})
	own := 0
	for _, n := range nodes {
		own += n.log.count("msg=ban ") - n.log.count("msg=ban ", "source=cluster")
	}
	if own != addrs {
		t.Errorf("%d ban lines without source=cluster, want %d (one per ban)", own, addrs)
	}
}

// The n-th ban of a unit lasts BanTime × BanFactor^(n-1), capped; the count
// is shared. Time is passed in.
func TestEscalationShared(t *testing.T) {
	url, pfx := redisURL(t), prefix(t)
	a := startNode(t, nodeOpt{url: url, prefix: pfx, waitUp: true})
	b := startNode(t, nodeOpt{url: url, prefix: pfx, waitUp: true})
	ip := netip.MustParseAddr("2001:db8:1:2:3:4:5:6")
	now := time.Now().Truncate(time.Millisecond)
	want := []time.Duration{time.Hour, 2 * time.Hour, 4 * time.Hour, 5 * time.Hour}
	for round, d := range want {
		var res engine.Failed
		for i := range testPolicy.MaxFailures {
			n := []*node{a, b}[i%2]
			var err error
			if res, err = n.local.Fail(ctx, ip, "", now); err != nil {
				t.Fatal(err)
			}
		}
		if !res.Banned || res.Ban.Count != round+1 || !res.Ban.Until.Equal(now.Add(d)) {
			t.Fatalf("round %d: %+v, want ban #%d until now+%v", round+1, res, round+1, d)
		}
		if k := netip.MustParsePrefix("2001:db8:1:2::/64"); res.Key != k {
			t.Fatalf("key %v, want the /64 %v", res.Key, k)
		}
		now = res.Ban.Until.Add(time.Second) // the ban has ended
	}
}

// Never-ban addresses are counted but not banned; a success resets the
// shared count.
func TestNeverBanAndSuccess(t *testing.T) {
	url, pfx := redisURL(t), prefix(t)
	lists := decide.NewLists(nil, nil, []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")})
	a := startNode(t, nodeOpt{url: url, prefix: pfx, waitUp: true, lists: lists})
	b := startNode(t, nodeOpt{url: url, prefix: pfx, waitUp: true})
	now := time.Now()
	never := netip.MustParseAddr("192.0.2.1")
	for range 2 * testPolicy.MaxFailures {
		res, err := a.local.Fail(ctx, never, "", now)
		if err != nil || res.Banned || !res.NeverBan {
			t.Fatalf("never-ban address: %+v, %v", res, err)
		}
	}
	ip := netip.MustParseAddr("198.51.100.1")
	for range testPolicy.MaxFailures - 1 {
		if _, err := a.local.Fail(ctx, ip, "", now); err != nil {
			t.Fatal(err)
		}
	}
	// Every instance reports the shared count, not its own.
	if got := b.local.Explain(ctx, ip, now).Failures; got != testPolicy.MaxFailures-1 {
		t.Fatalf("failures seen by the other instance: %d, want %d", got, testPolicy.MaxFailures-1)
	}
	if _, _, err := b.local.Succeed(ctx, ip, now); err != nil {
		t.Fatal(err)
	}
	if got := a.local.Explain(ctx, ip, now).Failures; got != 0 {
		t.Fatalf("failures after a success on another instance: %d, want 0", got)
	}
	res, err := a.local.Fail(ctx, ip, "", now)
	if err != nil || res.Failures != 1 || res.Banned {
		t.Fatalf("after a success on another instance: %+v, %v; want failures 1", res, err)
	}
}

// Manual bans (addresses and ranges), unbans and removals reach every
// instance, and Redis holds exactly what is in force.
func TestManualBansPropagate(t *testing.T) {
	url, pfx := redisURL(t), prefix(t)
	a := startNode(t, nodeOpt{url: url, prefix: pfx, waitUp: true})
	b := startNode(t, nodeOpt{url: url, prefix: pfx, waitUp: true})
	rc := rawClient(t, url)
	now := time.Now()

	ban, err := a.local.Ban(ctx, netip.MustParsePrefix("10.0.0.0/8"), 10*time.Minute, "scanner", now)
	if err != nil || ban.Count != 1 || !ban.Manual {
		t.Fatalf("Ban: %+v, %v", ban, err)
	}
	waitFor(t, "range ban on b", time.Second, func() bool { return banned(b.core, "10.9.8.7", now) })
	if r, ok := b.core.Record(netip.MustParsePrefix("10.0.0.0/8")); !ok || r.Note != "scanner" || !r.Until.Equal(ban.Until) {
		t.Fatalf("b holds %+v, want %+v", r, ban)
	}
	lifted, err := b.local.Unban(ctx, netip.MustParseAddr("10.9.8.7"), now)
	if err != nil || len(lifted.Bans) != 1 || lifted.Bans[0].Key.String() != "10.0.0.0/8" {
		t.Fatalf("Unban: %v, %v", lifted, err)
	}
	waitFor(t, "unban on a", time.Second, func() bool { return !banned(a.core, "10.9.8.7", now) })
	if n, _ := rc.Exists(ctx, pfx+"ban:{10.0.0.0/8}").Result(); n != 0 {
		t.Error("the range ban is still in Redis")
	}

	if _, err := b.local.Ban(ctx, netip.MustParsePrefix("198.51.100.7/32"), 0, "", now); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "address ban on a", time.Second, func() bool { return banned(a.core, "198.51.100.7", now) })
	got, err := a.local.Remove(ctx, netip.MustParsePrefix("198.51.100.7/32"), now)
	if err != nil || len(got.Bans) != 1 || got.Bans[0].Key.String() != "198.51.100.7/32" {
		t.Fatalf("Remove: %+v %v", got, err)
	}
	waitFor(t, "removal on b", time.Second, func() bool { return !banned(b.core, "198.51.100.7", now) })
	if got, _ := a.local.Remove(ctx, netip.MustParsePrefix("198.51.100.7/32"), now); len(got.Bans) > 0 {
		t.Error("a second Remove found a ban")
	}
	waitFor(t, "unban lines", time.Second, func() bool { return b.log.count("msg=unban", "source=cluster") == 1 })
}

// An instance that missed an unban drops the ban at its next sync (the
// tombstone says so) instead of pushing it back; a ban only it holds, with no
// tombstone, is pushed to Redis and so to the others.
func TestReconcileTombstoneAndPush(t *testing.T) {
	url, pfx := redisURL(t), prefix(t)
	a := startNode(t, nodeOpt{url: url, prefix: pfx, waitUp: true})
	b := startNode(t, nodeOpt{url: url, prefix: pfx, waitUp: true})
	now := time.Now()
	if _, err := a.local.Ban(ctx, netip.MustParsePrefix("198.51.100.20/32"), time.Hour, "", now); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "ban on b", time.Second, func() bool { return banned(b.core, "198.51.100.20", now) })
	b.stop() // b is partitioned: it keeps its table but hears nothing
	if _, err := a.local.Unban(ctx, netip.MustParseAddr("198.51.100.20"), now); err != nil {
		t.Fatal(err)
	}
	// Meanwhile b learned a ban nobody else has (as if made during an outage).
	b.core.Apply(decide.Ban{Key: netip.MustParsePrefix("198.51.100.21/32"), Until: now.Add(time.Hour).Truncate(time.Millisecond), Count: 1, Failures: 5}, now)

	b2 := startNode(t, nodeOpt{url: url, prefix: pfx, waitUp: true, core: b.core})
	if banned(b2.core, "198.51.100.20", now) {
		t.Error("b kept a ban lifted while it was away")
	}
	waitFor(t, "pushed ban on a", time.Second, func() bool { return banned(a.core, "198.51.100.21", now) })
	waitFor(t, "b's unban line", time.Second, func() bool {
		return b2.log.count("msg=unban", "key=198.51.100.20/32", "source=cluster") == 1
	})
}

// Redis down: the backend counts and bans locally, each outage and recovery is
// logged once, and when Redis comes back empty (no persistence) the local
// bans are pushed and the unbans made meanwhile are not undone.
func TestOutageAndRecovery(t *testing.T) {
	r := ownRedis(t)
	pfx := prefix(t)
	st, err := store.Open(filepath.Join(t.TempDir(), "a.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	a := startNode(t, nodeOpt{url: r.URL, prefix: pfx, waitUp: true, store: st})
	b := startNode(t, nodeOpt{url: r.URL, prefix: pfx, waitUp: true})
	now := time.Now()
	for _, ip := range []string{"203.0.113.1", "203.0.113.2"} {
		if _, err := a.local.Ban(ctx, netip.MustParsePrefix(ip+"/32"), time.Hour, "", now); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "bans on b", time.Second, func() bool { return banned(b.core, "203.0.113.2", now) })

	r.Kill()
	waitFor(t, "a sees the outage", 5*time.Second, func() bool { return !a.c.Up() })
	var res engine.Failed
	for range testPolicy.MaxFailures {
		if res, err = a.local.Fail(ctx, netip.MustParseAddr("203.0.113.3"), "", now); err != nil {
			t.Fatal(err)
		}
	}
	if !res.Banned || !banned(a.core, "203.0.113.3", now) || !res.Failed() {
		t.Fatalf("local fallback did not ban: %+v", res)
	}
	if lifted, err := a.local.Unban(ctx, netip.MustParseAddr("203.0.113.1"), now); err != nil || len(lifted.Bans) != 1 || !lifted.Failed() {
		t.Fatalf("Unban during the outage: %v, %v", lifted, err)
	}
	if recs, _ := st.Load(now, time.Hour); len(recs) != 2 {
		t.Errorf("state file holds %d bans during the outage, want 2", len(recs))
	}

	if err := r.Restart(); err != nil { // empty: no persistence
		t.Fatal(err)
	}
	rc := rawClient(t, r.URL)
	waitFor(t, "a back up", 5*time.Second, a.c.Up)
	waitFor(t, "b back up", 5*time.Second, b.c.Up)
	waitFor(t, "bans restored in Redis", 5*time.Second, func() bool {
		n, _ := rc.Exists(ctx, pfx+"ban:{203.0.113.2/32}", pfx+"ban:{203.0.113.3/32}").Result()
		return n == 2
	})
	waitFor(t, "fallback ban on b", 2*time.Second, func() bool { return banned(b.core, "203.0.113.3", now) })
	// b never heard the unban of .1 and pushed it back on reconnect, or a's
	// tombstone (written when a replayed the unban) dropped it: either order
	// must end with .1 unbanned everywhere.
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, _ := rc.Exists(ctx, pfx+"ban:{203.0.113.1/32}").Result()
		if n == 0 && !banned(a.core, "203.0.113.1", now) && !banned(b.core, "203.0.113.1", now) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("unban of .1 undone: in redis %d, on a %v, on b %v\na:\n%s\nb:\n%s", n,
				banned(a.core, "203.0.113.1", now), banned(b.core, "203.0.113.1", now), a.log, b.log)
		}
		time.Sleep(2 * time.Millisecond)
	}
	for name, n := range map[string]*node{"a": a, "b": b} {
		if o, rec := n.log.count("msg=\"redis unreachable;"), n.log.count("msg=\"redis reachable again;"); o != 1 || rec != 1 {
			t.Errorf("%s logged %d outages and %d recoveries, want 1 and 1:\n%s", name, o, rec, n.log)
		}
	}
	var sb strings.Builder
	a.local.Metrics().Write(&sb)
	for _, want := range []string{"doorman_redis_up 1", "doorman_redis_reconnects_total 1"} {
		if !strings.Contains(sb.String(), want+"\n") {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// A start while Redis is unreachable works from the local table, and joins
// the cluster when Redis appears.
func TestStartWhileRedisDown(t *testing.T) {
	requireRedisServer(t)
	port, err := testproc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("redis://127.0.0.1:%d/0", port)
	core := decide.New(testPolicy, nil, 100, 100)
	now := time.Now()
	core.Apply(decide.Ban{Key: netip.MustParsePrefix("203.0.113.9/32"), Until: now.Add(time.Hour).Truncate(time.Millisecond), Count: 1}, now)
	a := startNode(t, nodeOpt{url: url, prefix: prefix(t), core: core})
	waitFor(t, "outage logged", 5*time.Second, func() bool { return a.log.count("redis unreachable at start") == 1 })
	res, err := a.local.Fail(ctx, netip.MustParseAddr("203.0.113.10"), "", now)
	if err != nil || res.Failures != 1 {
		t.Fatalf("Fail while down: %+v, %v", res, err)
	}
	if !banned(a.core, "203.0.113.9", now) {
		t.Fatal("the ban from the local table is not in force")
	}
	r, err := spawnRedis(port)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	waitFor(t, "a joins", 10*time.Second, a.c.Up)
	rc := rawClient(t, url)
	waitFor(t, "local ban pushed", 2*time.Second, func() bool {
		n, _ := rc.Exists(ctx, a.c.keys.of(netip.MustParsePrefix("203.0.113.9/32"))[keyBan]).Result()
		return n == 1
	})
}

func TestNewClientURLs(t *testing.T) {
	for _, tc := range []struct {
		name, url string
		want      string // type
		bad       bool
	}{
		{"single", "redis://user:secret@127.0.0.1:6379/2", "*redis.Client", false},
		{"tls", "rediss://127.0.0.1:6380/0", "*redis.Client", false},
		{"unix", "unix:///run/redis.sock?db=1", "*redis.Client", false},
		{"sentinel", "redis://127.0.0.1:26379?master_name=main&addr=127.0.0.2:26379", "*redis.Client", false},
		{"cluster seeds", "redis://127.0.0.1:7000?addr=127.0.0.1:7001", "*redis.ClusterClient", false},
		{"cluster one seed", "redis://127.0.0.1:7000?cluster=true", "*redis.ClusterClient", false},
		{"unknown option", "redis://127.0.0.1:6379?bogus=1", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := NewClient(tc.url)
			if tc.bad {
				if err == nil {
					t.Fatalf("no error for %q", tc.url)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if got := fmt.Sprintf("%T", c); got != tc.want {
				t.Errorf("%T, want %s", c, tc.want)
			}
		})
	}
	if got := Redact("redis://user:secret@127.0.0.1:6379/0"); strings.Contains(got, "secret") {
		t.Errorf("Redact left the password: %s", got)
	}
}

// The short defaults apply unless the URL sets a value, for every client kind.
func TestTune(t *testing.T) {
	var dial, read, write time.Duration
	var retries int
	var ctxTimeout bool
	tune(&dial, &read, &write, &retries, &ctxTimeout)
	if dial != dialTimeout || read != ioTimeout || write != ioTimeout || retries != -1 || !ctxTimeout {
		t.Errorf("defaults: dial %v read %v write %v retries %d ctx %v", dial, read, write, retries, ctxTimeout)
	}
	dial, read, write, retries = 5*time.Second, 6*time.Second, 7*time.Second, 2
	tune(&dial, &read, &write, &retries, &ctxTimeout)
	if dial != 5*time.Second || read != 6*time.Second || write != 7*time.Second || retries != 2 {
		t.Errorf("explicit values not kept: dial %v read %v write %v retries %d", dial, read, write, retries)
	}
}

// BenchmarkBanPropagation times a manual ban from the API call on one
// instance to the ban being in force in another instance's Core, through a
// real Redis; it reports the median and the 99th percentile.
func BenchmarkBanPropagation(b *testing.B) {
	url, pfx := redisURL(b), prefix(b)
	src := startNode(b, nodeOpt{url: url, prefix: pfx, waitUp: true})
	dst := startNode(b, nodeOpt{url: url, prefix: pfx, waitUp: true})
	var lat []time.Duration
	i := 0
	for b.Loop() {
		ip := netip.AddrFrom4([4]byte{10, 80, byte(i >> 8), byte(i)})
		i++
		start := time.Now()
		if _, err := src.local.Ban(ctx, netip.PrefixFrom(ip, 32), time.Hour, "", start); err != nil {
			b.Fatal(err)
		}
		for dst.core.Decide(ip, start).Reason != decide.Banned {
			if time.Since(start) > time.Second {
				b.Fatalf("%v not banned on the other instance after 1s", ip)
			}
			runtime.Gosched() // a spinning loop would delay the network poller
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// A new instance loads the full ban set from Redis on start, into its Core
// and its state file.
func TestFullSyncOnStart(t *testing.T) {
	url, pfx := redisURL(t), prefix(t)
	a := startNode(t, nodeOpt{url: url, prefix: pfx, waitUp: true})
	const n = 3000
	now := time.Now()
	for i := range n {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 90 + byte(i>>16), byte(i >> 8), byte(i)}), 32)
		if _, err := a.local.Ban(ctx, p, time.Hour, "", now); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), "b.db")
	st, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	start := time.Now()
	b := startNode(t, nodeOpt{url: url, prefix: pfx, store: st})
	waitFor(t, "full sync", 30*time.Second, func() bool { return b.core.Stats(time.Now()).BanRecords == n })
	inCore := time.Since(start)
	b.stop() // waits for the state-file writes
	t.Logf("%d bans: in the Core after %v, on disk after %v", n, inCore, time.Since(start))
	if recs, err := st.Load(now, time.Hour); err != nil || len(recs) != n {
		t.Fatalf("state file holds %d bans (%v), want %d", len(recs), err, n)
	}
	if got := b.log.count("msg=ban ", "source=cluster"); got != n {
		t.Errorf("%d learned-ban lines, want %d", got, n)
	}
}

// startRedisCluster starts a three-master Redis Cluster on loopback and
// returns a DOORMAN_REDIS_URL for it.
func startRedisCluster(t *testing.T) string {
	t.Helper()
	requireRedisServer(t)
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		testproc.Require(t, "redis-cli not found; install with: apt-get install redis-tools")
	}
	var addrs []string
	for range 3 {
		// The cluster bus gets its own free port, below the ephemeral range
		// like the client port: port+10000, Redis's default, may be taken by
		// an outgoing connection of a test running beside this one.
		r, err := spawnRedis(0, "--cluster-enabled", "yes", "--cluster-port", testproc.AnotherFreePort)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(r.Close)
		addrs = append(addrs, "127.0.0.1:"+strconv.Itoa(r.Port))
	}
	out, err := exec.Command(cli, append(append([]string{"--cluster", "create"}, addrs...),
		"--cluster-replicas", "0", "--cluster-yes")...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, addr := range addrs {
		c := redis.NewClient(&redis.Options{Addr: addr})
		waitFor(t, "cluster_state:ok on "+addr, 20*time.Second, func() bool {
			info, _ := c.ClusterInfo(ctx).Result()
			return strings.Contains(info, "cluster_state:ok")
		})
		c.Close()
	}
	return "redis://" + addrs[0] + "?addr=" + addrs[1] + "&addr=" + addrs[2]
}

// Cluster mode works on a Redis Cluster: keys of one ban share a slot, the
// messages reach every instance, and the full sync scans every master.
func TestRedisCluster(t *testing.T) {
	url := startRedisCluster(t)
	pfx := prefix(t)
	a := startNode(t, nodeOpt{url: url, prefix: pfx, waitUp: true})
	b := startNode(t, nodeOpt{url: url, prefix: pfx, waitUp: true})
	if _, ok := a.c.rdb.(*redis.ClusterClient); !ok {
		t.Fatalf("client is %T, want a cluster client", a.c.rdb)
	}
	now := time.Now()
	const n = 50 // spread over the three masters
	for i := range n {
		ip := netip.AddrFrom4([4]byte{198, 18, 0, byte(i + 1)})
		var res engine.Failed
		for j := range testPolicy.MaxFailures {
			var err error
			if res, err = []*node{a, b}[j%2].local.Fail(ctx, ip, "", now); err != nil {
				t.Fatal(err)
			}
		}
		if !res.Banned {
			t.Fatalf("%v: not banned after %d failures: %+v", ip, testPolicy.MaxFailures, res)
		}
	}
	waitFor(t, "bans on a", 5*time.Second, func() bool { return len(a.core.Bans(now)) == n })
	waitFor(t, "bans on a", 5*time.Second, func() bool { return len(b.core.Bans(now)) == n })
	c := startNode(t, nodeOpt{url: url, prefix: pfx, waitUp: true})
	if got := len(c.core.Bans(now)); got != n {
		t.Errorf("full sync over the masters loaded %d bans, want %d", got, n)
	}
	if _, err := c.local.Unban(ctx, netip.AddrFrom4([4]byte{198, 18, 0, 1}), now); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "unban on a", 5*time.Second, func() bool { return !banned(a.core, "198.18.0.1", now) })
}

// A unit whose ban Redis holds but this instance lost (evicted here) is in
// force again at its next failure, before the answer.
func TestFailureFindsRedisBan(t *testing.T) {
	url, pfx := redisURL(t), prefix(t)
	a := startNode(t, nodeOpt{url: url, prefix: pfx, waitUp: true})
	now := time.Now()
	ip := netip.MustParseAddr("203.0.113.77")
	var res engine.Failed
	for range testPolicy.MaxFailures {
		res, _ = a.local.Fail(ctx, ip, "", now)
	}
	if !res.Banned {
		t.Fatalf("threshold: %+v", res)
	}
	a.core.Remove(res.Key) // as an eviction would
	if banned(a.core, ip.String(), now) {
		t.Fatal("still banned after the local removal")
	}
	res, err := a.local.Fail(ctx, ip, "", now.Add(time.Second))
	if err != nil || !res.InForce() || !res.Ban.Until.Equal(res.Ban.Until.Truncate(time.Millisecond)) {
		t.Fatalf("failure with the ban in Redis: %+v %v, want in force", res, err)
	}
	if !banned(a.core, ip.String(), now.Add(time.Second)) {
		t.Fatal("the Redis ban is not in force here after the failure")
	}
}

// Unit bans made through different instances add up to a range ban, which
// every instance holds.
func TestRangeBanAcrossInstances(t *testing.T) {
	url, pfx := redisURL(t), prefix(t)
	p := testPolicy
	p.RangeThreshold, p.IPv4RangePrefix, p.IPv6RangePrefix = 3, 24, 48
	a := startNode(t, nodeOpt{url: url, prefix: pfx, waitUp: true, core: decide.New(p, nil, 1000, 1000)})
	b := startNode(t, nodeOpt{url: url, prefix: pfx, waitUp: true, core: decide.New(p, nil, 1000, 1000)})
	now := time.Now()
	for i, n := range []*node{a, b, a} {
		ip := netip.MustParseAddr(fmt.Sprintf("198.51.100.%d", 10+i))
		for range p.MaxFailures {
			if _, err := n.local.Fail(ctx, ip, "", now); err != nil {
				t.Fatal(err)
			}
		}
		// Each unit ban reaches the other instance before the next.
		for _, m := range []*node{a, b} {
			waitFor(t, "unit ban everywhere", 3*time.Second, func() bool { return banned(m.core, ip.String(), now) })
		}
	}
	for _, n := range []*node{a, b} {
		waitFor(t, "range ban", 3*time.Second, func() bool {
			v := n.core.Decide(netip.MustParseAddr("198.51.100.200"), now)
			return v.Reason == decide.Banned && v.Key.String() == "198.51.100.0/24"
		})
	}
	rc := rawClient(t, url)
	if h, err := rc.HGetAll(ctx, a.c.keys.of(netip.MustParsePrefix("198.51.100.0/24"))[keyBan]).Result(); err != nil || h["manual"] != "2" {
		t.Fatalf("range ban in Redis: %v %v", h, err)
	}
}

// DOORMAN_BAN_JITTER lengthens the bans Redis makes too, within its bound.
func TestJitterInRedis(t *testing.T) {
	p := testPolicy
	p.Jitter = 0.5
	a := startNode(t, nodeOpt{url: redisURL(t), prefix: prefix(t), waitUp: true, core: decide.New(p, nil, 1000, 1000)})
	now := time.Now().Truncate(time.Millisecond)
	lengths := map[time.Duration]bool{}
	for i := range 5 {
		ip := netip.MustParseAddr(fmt.Sprintf("192.0.2.%d", 100+i))
		var res engine.Failed
		for range p.MaxFailures {
			res, _ = a.local.Fail(ctx, ip, "", now)
		}
		d := res.Ban.Until.Sub(now)
		if !res.Banned || d < p.BanTime || d > p.BanTime*3/2 {
			t.Fatalf("%v: %+v, length %v, want from 1h to 1h30m", ip, res, d)
		}
		lengths[d] = true
	}
	if len(lengths) < 2 {
		t.Fatalf("five bans all of length %v: no jitter", lengths)
	}
}
