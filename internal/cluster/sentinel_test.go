package cluster

import (
	"context"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/doorman/doorman/internal/engine"
	"github.com/doorman/doorman/internal/testproc"
)

// startSentinel starts one Redis Sentinel that monitors the master at
// masterPort under the name "main", and fails it over one second after it
// stops answering. It returns a client of the sentinel and its address.
func startSentinel(t *testing.T, masterPort int) (*redis.SentinelClient, string) {
	t.Helper()
	s, err := testproc.StartSentinel(requireRedisServer(t), masterPort)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	addr := "127.0.0.1:" + strconv.Itoa(s.Port)
	sc := redis.NewSentinelClient(&redis.Options{Addr: addr, MaxRetries: -1})
	t.Cleanup(func() { sc.Close() })
	return sc, addr
}

// Cluster mode works on Sentinel: doormen follow the master through a
// failover, bans acknowledged before it are still in force and in Redis after
// it, and new bans propagate through the new master.
func TestRedisSentinel(t *testing.T) {
	requireRedisServer(t)
	master, err := spawnRedis(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(master.Close)
	replica, err := spawnRedis(0, "--replicaof", "127.0.0.1", strconv.Itoa(master.Port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(replica.Close)
	rc := rawClient(t, replica.URL)
	waitFor(t, "replica in sync", 10*time.Second, func() bool {
		info, _ := rc.Info(ctx, "replication").Result()
		return strings.Contains(info, "master_link_status:up")
	})

	sc, sentinelAddr := startSentinel(t, master.Port)
	waitFor(t, "sentinel knows the replica", 20*time.Second, func() bool {
		rs, _ := sc.Replicas(ctx, "main").Result()
		return len(rs) == 1
	})
	url := "redis://" + sentinelAddr + "?master_name=main"
	pfx := prefix(t)
	a := startNode(t, nodeOpt{url: url, prefix: pfx, waitUp: true})
	b := startNode(t, nodeOpt{url: url, prefix: pfx, waitUp: true})

	now := time.Now()
	failUntilBanned := func(n *node, ip netip.Addr) {
		t.Helper()
		var res engine.Failed
		for range testPolicy.MaxFailures {
			if res, err = n.local.Fail(ctx, ip, "", now); err != nil {
				t.Fatal(err)
			}
		}
		if !res.Banned {
			t.Fatalf("%v: not banned after %d failures: %+v", ip, testPolicy.MaxFailures, res)
		}
	}
	before := netip.MustParseAddr("198.18.1.1")
	failUntilBanned(a, before)
	waitFor(t, "ban on b", 5*time.Second, func() bool { return banned(b.core, before.String(), now) })
	// Replication is asynchronous: the ban must reach the replica before the
	// master is lost, as it would on a healthy pair.
	mc := rawClient(t, master.URL)
	if n, err := mc.Wait(ctx, 1, 5*time.Second).Result(); err != nil || n != 1 {
		t.Fatalf("WAIT 1: %d replicas, %v", n, err)
	}

	master.Kill()
	waitFor(t, "failover to the replica", 30*time.Second, func() bool {
		addr, err := sc.GetMasterAddrByName(ctx, "main").Result()
		return err == nil && len(addr) == 2 && addr[1] == strconv.Itoa(replica.Port)
	})
	after := netip.MustParseAddr("198.18.1.2")
	// Until b has noticed the failover these failures count locally (and any
	// ban they make is pushed to the new master when it has).
	waitFor(t, "doormen on the new master", 20*time.Second, func() bool {
		_, err := b.local.Fail(context.Background(), netip.MustParseAddr("198.18.1.200"), "", now)
		return err == nil && a.c.Up() && b.c.Up()
	})
	failUntilBanned(b, after)
	waitFor(t, "ban made after the failover on a", 5*time.Second, func() bool { return banned(a.core, after.String(), now) })
	if !banned(a.core, before.String(), now) || !banned(b.core, before.String(), now) {
		t.Fatal("a ban acknowledged before the failover is not in force after it")
	}
	for _, msg := range []string{"redis unreachable", "redis reachable again"} {
		if got := a.log.count(msg); got != 1 {
			t.Errorf("%q logged %d times during the failover, want once:\n%s", msg, got, a.log)
		}
	}

	c := startNode(t, nodeOpt{url: url, prefix: pfx, waitUp: true})
	for _, ip := range []netip.Addr{before, after} {
		if !banned(c.core, ip.String(), now) {
			t.Errorf("a doorman started after the failover did not load the ban of %v", ip)
		}
	}
}
