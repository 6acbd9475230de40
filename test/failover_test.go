package test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/doorman/doorman/internal/testproc"
)

// Redis failover and partitions, measured (docs/reliability.md): one
// primary, one replica and three sentinels (quorum 2), all real
// redis-server processes on loopback, and two doormen. Every acknowledged
// change must hold on every doorman after convergence, and in Redis (a
// doorman started afterwards learns it); the time to converge is logged.

// ledger is what the doormen acknowledged.
type ledger struct {
	mu       sync.Mutex
	codes    map[int]int     // answers to failures by status
	bans     map[string]bool // ban keys acknowledged ("banned":true or 201)
	locks    map[string]bool // accounts acknowledged locked
	unbanned map[string]bool // acknowledged unbans (the key)
	unlocked map[string]bool
}

func newLedger() *ledger {
	return &ledger{codes: map[int]int{}, bans: map[string]bool{}, locks: map[string]bool{}, unbanned: map[string]bool{}, unlocked: map[string]bool{}}
}

type failAnswer struct {
	Key     string `json:"key"`
	Banned  bool   `json:"banned"`
	Account *struct {
		Username string `json:"username"`
		Locked   bool   `json:"locked"`
	} `json:"account"`
}

// fail reports one failure to d and books what was acknowledged.
func (l *ledger) fail(t *testing.T, d *Doorman, ip, user string) {
	code, body := d.API(t, "POST", "/v1/failures", map[string]string{"ip": ip, "username": user})
	l.mu.Lock()
	l.codes[code]++
	l.mu.Unlock()
	if code != 200 {
		return // not acknowledged: nothing promised
	}
	var a failAnswer
	if err := json.Unmarshal(body, &a); err != nil {
		t.Errorf("failure answer %q: %v", body, err)
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if a.Banned {
		l.bans[a.Key] = true
	}
	if a.Account != nil && a.Account.Locked {
		l.locks[a.Account.Username] = true
	}
}

// state is one doorman's bans and locks in force.
func state(t *testing.T, d *Doorman) (bans, locks map[string]bool) {
	t.Helper()
	bans, locks = map[string]bool{}, map[string]bool{}
	code, body := d.API(t, "GET", "/v1/bans", nil)
	var b struct {
		Bans []struct{ Key string } `json:"bans"`
	}
	if code != 200 || json.Unmarshal(body, &b) != nil {
		t.Fatalf("GET /v1/bans: %d %s", code, body)
	}
	for _, x := range b.Bans {
		bans[x.Key] = true
	}
	code, body = d.API(t, "GET", "/v1/accounts", nil)
	var a struct {
		Accounts []struct {
			Username string
			Locked   bool
		} `json:"accounts"`
	}
	if code != 200 || json.Unmarshal(body, &a) != nil {
		t.Fatalf("GET /v1/accounts: %d %s", code, body)
	}
	for _, x := range a.Accounts {
		if x.Locked {
			locks[x.Username] = true
		}
	}
	return bans, locks
}

// missing lists what d does not hold of the ledger: acknowledged bans and
// locks not in force, acknowledged unbans and unlocks undone.
func (l *ledger) missing(t *testing.T, d *Doorman) []string {
	t.Helper()
	bans, locks := state(t, d)
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for k := range l.bans {
		if !bans[k] && !l.unbanned[k] {
			out = append(out, "ban "+k)
		}
	}
	for u := range l.locks {
		if !locks[u] && !l.unlocked[u] {
			out = append(out, "lock "+u)
		}
	}
	for k := range l.unbanned {
		if bans[k] {
			out = append(out, "unban undone "+k)
		}
	}
	for u := range l.unlocked {
		if locks[u] {
			out = append(out, "unlock undone "+u)
		}
	}
	sort.Strings(out)
	return out
}

// converge polls until no doorman misses anything of the ledger and
// returns how long that took from since; past limit the test fails with
// what is missing.
func (l *ledger) converge(t *testing.T, ds []*Doorman, since time.Time, limit time.Duration) time.Duration {
	t.Helper()
	for {
		var miss []string
		for i, d := range ds {
			for _, m := range l.missing(t, d) {
				miss = append(miss, fmt.Sprintf("doorman %d: %s", i, m))
			}
		}
		took := time.Since(since)
		if len(miss) == 0 {
			return took
		}
		if took > limit {
			t.Fatalf("after %v, %d acknowledged changes do not hold (loss), first ones:\n%s", took.Round(time.Millisecond), len(miss),
				strings.Join(miss[:min(len(miss), 20)], "\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// storm sends failures for the units and accounts of batch from workers
// goroutines, MaxFailures (3) per unit, each unit's to one doorman in turn
// (while Redis is unreachable, each doorman counts alone), accounts spread
// over all.
func (l *ledger) storm(t *testing.T, ds []*Doorman, batch, workers int) {
	var wg sync.WaitGroup
	jobs := make(chan int)
	for range workers {
		wg.Go(func() {
			for i := range jobs {
				ip := fmt.Sprintf("2001:db8:%x:%x::1", batch, i) // a unit (/64) each
				user := fmt.Sprintf("user-%d-%d", batch, i%20)   // 20 accounts a batch
				for range 3 {
					l.fail(t, ds[i%len(ds)], ip, user)
				}
			}
		})
	}
	for i := range 150 {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
}

// sentinelSet is a primary, a replica and three sentinels.
type sentinelSet struct {
	primary, replica *testproc.Redis
	sentinels        []*testproc.Redis
	url              string
}

func startSentinelSet(t *testing.T) *sentinelSet {
	t.Helper()
	requireTool(t, "redis-server", "redis-server")
	bin, _ := lookTool("redis-server")
	s := &sentinelSet{}
	var err error
	if s.primary, err = testproc.StartRedis(bin, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.primary.Close)
	if s.replica, err = testproc.StartRedis(bin, 0, "--replicaof", "127.0.0.1", strconv.Itoa(s.primary.Port)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.replica.Close)
	var addrs []string
	for range 3 {
		sn, err := testproc.StartSentinelQuorum(bin, s.primary.Port, 2)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(sn.Close)
		s.sentinels = append(s.sentinels, sn)
		addrs = append(addrs, "127.0.0.1:"+strconv.Itoa(sn.Port))
	}
	ctx := context.Background()
	deadline := time.Now().Add(30 * time.Second)
	for _, sn := range s.sentinels {
		sc := redis.NewSentinelClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(sn.Port), MaxRetries: -1})
		for {
			rs, _ := sc.Replicas(ctx, "main").Result()
			ss, _ := sc.Sentinels(ctx, "main").Result()
			if len(rs) == 1 && len(ss) == 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("sentinel %d sees %d replicas and %d other sentinels, want 1 and 2", sn.Port, len(rs), len(ss))
			}
			time.Sleep(50 * time.Millisecond)
		}
		sc.Close()
	}
	s.url = "redis://" + addrs[0] + "?master_name=main&addr=" + addrs[1] + "&addr=" + addrs[2]
	return s
}

// masterPort is the primary's port as the first sentinel names it.
func (s *sentinelSet) masterPort(t *testing.T) string {
	sc := redis.NewSentinelClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(s.sentinels[0].Port), MaxRetries: -1})
	defer sc.Close()
	a, err := sc.GetMasterAddrByName(context.Background(), "main").Result()
	if err != nil || len(a) != 2 {
		return ""
	}
	return a[1]
}

var failoverEnv = map[string]string{"DOORMAN_MAX_FAILURES": "3", "DOORMAN_ACCOUNT_MAX_FAILURES": "3", "DOORMAN_MAX_BAN_TIME": "168h"}

// TestClusterFailover: kill -9 the primary during a failure storm; after the
// sentinels promote the replica, every acknowledged ban and lock is in force
// on both doormen and in Redis, and unbans and unlocks made during the
// failover hold.
func TestClusterFailover(t *testing.T) {
	s := startSentinelSet(t)
	pfx := clusterPrefix(t)
	ds := startCluster(t, 2, s.url, pfx, failoverEnv)
	l := newLedger()
	l.storm(t, ds, 1, 8) // before the failover
	killed := time.Now()
	s.primary.Kill()
	var wg sync.WaitGroup
	wg.Go(func() { l.storm(t, ds, 2, 8) }) // through the failover
	// Unbans and unlocks of the first batch, during the failover.
	l.mu.Lock()
	var bans, users []string
	for k := range l.bans {
		bans = append(bans, k)
	}
	for u := range l.locks {
		users = append(users, u)
	}
	l.mu.Unlock()
	slices.Sort(bans)
	slices.Sort(users)
	for i, k := range bans[:min(20, len(bans))] {
		ip := strings.TrimSuffix(k, "/64") + "1"
		if code, _ := ds[i%2].API(t, "DELETE", "/v1/bans/"+ip, nil); code == 204 || code == 200 {
			l.mu.Lock()
			l.unbanned[k] = true
			l.mu.Unlock()
		}
	}
	for i, u := range users[:min(5, len(users))] {
		if code, _ := ds[i%2].API(t, "DELETE", "/v1/accounts/"+u, nil); code == 204 || code == 200 {
			l.mu.Lock()
			l.unlocked[u] = true
			l.mu.Unlock()
		}
	}
	wg.Wait()
	deadline := time.Now().Add(30 * time.Second)
	for s.masterPort(t) != strconv.Itoa(s.replica.Port) {
		if time.Now().After(deadline) {
			t.Fatalf("no failover to the replica in 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	promoted := time.Since(killed)
	l.mu.Lock()
	nb, nl, nu, nk := len(l.bans), len(l.locks), len(l.unbanned), len(l.unlocked)
	l.mu.Unlock()
	if nb < 250 || nl < 20 || nu == 0 || nk == 0 {
		t.Fatalf("the storm acknowledged %d bans, %d locks, %d unbans, %d unlocks (failures answered %v); want at least 250, 20, 1, 1", nb, nl, nu, nk, l.codes)
	}
	took := l.converge(t, ds, killed, 60*time.Second)
	// A doorman started now, with no state of its own, learns from Redis.
	c := startCluster(t, 1, s.url, pfx, map[string]string{"DOORMAN_MAX_FAILURES": "3", "DOORMAN_ACCOUNT_MAX_FAILURES": "3", "DOORMAN_STATE_FILE": ""})
	tookC := l.converge(t, c, time.Now(), 30*time.Second)
	t.Logf("failover: failures answered %v; %d bans, %d locks, %d unbans, %d unlocks acknowledged; replica promoted %v after kill -9, "+
		"both doormen converged %v after the kill, a new doorman %v after its start; loss 0",
		l.codes, nb, nl, nu, nk, promoted.Round(time.Millisecond), took.Round(time.Millisecond), tookC.Round(time.Millisecond))
}

// TestClusterPartition: one doorman stopped (SIGSTOP) for the partition
// length while the other takes bans, unbans, locks and unlocks; after
// SIGCONT it converges, and nothing acknowledged is lost.
func TestClusterPartition(t *testing.T) {
	part := 30 * time.Second
	if v := os.Getenv("DOORMAN_PARTITION"); v != "" {
		var err error
		if part, err = time.ParseDuration(v); err != nil {
			t.Fatal(err)
		}
	}
	s := startSentinelSet(t)
	ds := startCluster(t, 2, s.url, clusterPrefix(t), failoverEnv)
	l := newLedger()
	b := ds[1]
	if err := b.Cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	t.Cleanup(func() { b.Cmd.Process.Signal(syscall.SIGCONT) })
	l.storm(t, ds[:1], 3, 4)
	l.mu.Lock()
	var bans, users []string
	for k := range l.bans {
		bans = append(bans, k)
	}
	for u := range l.locks {
		users = append(users, u)
	}
	l.mu.Unlock()
	slices.Sort(bans)
	slices.Sort(users)
	for _, k := range bans[:10] {
		if code, _ := ds[0].API(t, "DELETE", "/v1/bans/"+strings.TrimSuffix(k, "/64")+"1", nil); code == 204 || code == 200 {
			l.unbanned[k] = true
		}
	}
	for _, u := range users[:3] {
		if code, _ := ds[0].API(t, "DELETE", "/v1/accounts/"+u, nil); code == 204 || code == 200 {
			l.unlocked[u] = true
		}
	}
	if code, body := ds[0].API(t, "POST", "/v1/bans", map[string]string{"ip": "198.51.100.0/24", "duration": "1h"}); code == 201 {
		l.bans["198.51.100.0/24"] = true
	} else {
		t.Fatalf("manual ban: %d %s", code, body)
	}
	time.Sleep(time.Until(stopped.Add(part))) // the partition's length, not a wait for an outcome
	if err := b.Cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	resumed := time.Now()
	took := l.converge(t, ds, resumed, 30*time.Second)
	t.Logf("partition: %v stopped; %d bans, %d locks, %d unbans, %d unlocks acknowledged meanwhile; converged %v after SIGCONT; loss 0",
		part, len(l.bans), len(l.locks), len(l.unbanned), len(l.unlocked), took.Round(time.Millisecond))
}
