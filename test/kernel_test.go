package test

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/doorman/doorman/internal/testproc"
)

// kernelElements lists a ban set of the site's table as prefixes
// ("192.0.2.1/32").
func (s *kernelSite) kernelElements(t *testing.T, set string) []string {
	t.Helper()
	els, err := testproc.NftSet([]byte(s.srv.run(t, "nft", "-j", "list", "set", "inet", s.table, set)))
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, 0, len(els))
	for _, e := range els {
		if a, err := netip.ParseAddr(e); err == nil {
			e = netip.PrefixFrom(a, a.BitLen()).String()
		}
		out = append(out, e)
	}
	slices.Sort(out)
	return out
}

// banKeys are the keys of the bans in force, from the API.
func (s *kernelSite) banKeys(t *testing.T, v6 bool) []string {
	t.Helper()
	code, body := s.dm.API(t, "GET", "/v1/bans", nil)
	var out struct {
		Bans []struct{ Key string } `json:"bans"`
	}
	if code != 200 || json.Unmarshal(body, &out) != nil {
		t.Fatalf("GET /v1/bans: %d %s", code, body)
	}
	var keys []string
	for _, b := range out.Bans {
		if strings.Contains(b.Key, ":") == v6 {
			keys = append(keys, b.Key)
		}
	}
	slices.Sort(keys)
	return keys
}

func (s *kernelSite) fail(t *testing.T, ip string) map[string]any {
	t.Helper()
	code, body := s.dm.API(t, "POST", "/v1/failures", map[string]string{"ip": ip})
	var out map[string]any
	if code != 200 || json.Unmarshal(body, &out) != nil {
		t.Fatalf("failure for %s: %d %s", ip, code, body)
	}
	return out
}

func (s *kernelSite) ban(t *testing.T, ip, d string) map[string]any {
	t.Helper()
	code, body := s.dm.API(t, "POST", "/v1/bans", map[string]string{"ip": ip, "duration": d})
	var out map[string]any
	if code != 201 || json.Unmarshal(body, &out) != nil {
		t.Fatalf("ban %s: %d %s", ip, code, body)
	}
	return out
}

func (s *kernelSite) metric(t *testing.T, name string) string {
	t.Helper()
	_, body := s.dm.API(t, "GET", "/metrics", nil)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v
		}
	}
	return ""
}

// TestKernelBans: nginx and doorman in a server namespace, clients in
// another one across a veth pair; the kernel drops what doorman bans.
func TestKernelBans(t *testing.T) {
	s := startKernelSite(t, nil)
	const web, open = "192.0.2.1:80", "192.0.2.1:8080"
	s.wantStatus(t, "192.0.2.10", web, 200)

	t.Run("five failures drop the next connection", func(t *testing.T) {
		for i := 1; i <= 5; i++ {
			out := s.fail(t, "192.0.2.10")
			if i == 5 && (out["banned"] != true || out["kernel"] != true) {
				t.Fatalf("5th failure: %v, want banned and kernel true", out)
			}
		}
		s.wantStatus(t, "192.0.2.10", web, 0)
		s.wantStatus(t, "192.0.2.11", web, 200)  // another client is served
		s.wantStatus(t, "192.0.2.10", open, 200) // other ports stay open
		if got := s.kernelElements(t, "bans4"); !slices.Equal(got, []string{"192.0.2.10/32"}) {
			t.Fatalf("bans4: got %v, want [192.0.2.10/32]", got)
		}
	})
	t.Run("unban opens it again", func(t *testing.T) {
		if code, body := s.dm.API(t, "DELETE", "/v1/bans/192.0.2.10", nil); code != 204 {
			t.Fatalf("DELETE: %d %s", code, body)
		}
		s.wantStatus(t, "192.0.2.10", web, 200)
	})
	t.Run("ipv6", func(t *testing.T) {
		s.wantStatus(t, "2001:db8::10", "[2001:db8::1]:80", 200)
		for range 5 {
			s.fail(t, "2001:db8::10")
		}
		s.wantStatus(t, "2001:db8::10", "[2001:db8::1]:80", 0)
		if got := s.kernelElements(t, "bans6"); !slices.Equal(got, []string{"2001:db8::/64"}) {
			t.Fatalf("bans6: got %v, want [2001:db8::/64]", got)
		}
	})
	t.Run("a range ban spares a never-ban address inside", func(t *testing.T) {
		if out := s.ban(t, "198.51.100.0/24", "1h"); out["kernel"] != true {
			t.Fatalf("ban answer %v, want kernel true", out)
		}
		s.wantStatus(t, "198.51.100.5", "198.51.100.1:80", 0)
		if _, err := s.status(t, "198.51.100.7", "198.51.100.1:80"); err != nil {
			t.Fatalf("never-ban 198.51.100.7 inside the banned range: %v, want an answer", err)
		}
	})
	t.Run("a flushed set is repaired within DOORMAN_NFT_CHECK", func(t *testing.T) {
		s.srv.run(t, "nft", "flush", "set", "inet", s.table, "bans4")
		start := time.Now()
		s.waitStatus(t, "198.51.100.5", "198.51.100.1:80", 0, 5*time.Second) // check every 1s
		t.Logf("repaired after %v", time.Since(start).Round(time.Millisecond))
		if got, want := s.kernelElements(t, "bans4"), s.banKeys(t, false); !slices.Equal(got, want) {
			t.Fatalf("bans4 after repair: got %v, want %v", got, want)
		}
		if v := s.metric(t, "doorman_nft_drift_total"); v == "" || v == "0" {
			t.Fatalf("doorman_nft_drift_total = %q, want > 0", v)
		}
	})
	t.Run("kill -9 and restart: the table is the state file's", func(t *testing.T) {
		s.dm.Kill(t)
		s.wantStatus(t, "198.51.100.5", "198.51.100.1:80", 0) // the bans hold while doorman is down
		s.srv.run(t, "nft", "add", "element", "inet", s.table, "bans4", "{ 203.0.113.99 timeout 1h }")
		if err := s.dm.Start(); err != nil {
			t.Fatal(err)
		}
		if got, want := s.kernelElements(t, "bans4"), s.banKeys(t, false); !slices.Equal(got, want) {
			t.Fatalf("bans4 after restart: got %v, want %v (the state file's)", got, want)
		}
		if got, want := s.kernelElements(t, "bans6"), s.banKeys(t, true); !slices.Equal(got, want) {
			t.Fatalf("bans6 after restart: got %v, want %v", got, want)
		}
	})
	t.Run("an expired ban leaves the kernel", func(t *testing.T) {
		s.ban(t, "192.0.2.11", "2s")
		s.wantStatus(t, "192.0.2.11", web, 0)
		s.waitStatus(t, "192.0.2.11", web, 200, 10*time.Second)
		if slices.Contains(s.kernelElements(t, "bans4"), "192.0.2.11/32") {
			t.Fatal("192.0.2.11 still in bans4 after its ban ended")
		}
	})
	t.Run("a clean stop leaves the table", func(t *testing.T) {
		s.dm.Stop(t)
		s.wantStatus(t, "198.51.100.5", "198.51.100.1:80", 0)
	})
}

// TestKernelRemoveOnStop: DOORMAN_NFT_REMOVE_ON_STOP=true deletes the table
// at a clean stop, and no other table.
func TestKernelRemoveOnStop(t *testing.T) {
	s := startKernelSite(t, map[string]string{"DOORMAN_NFT_REMOVE_ON_STOP": "true"})
	s.srv.run(t, "nft", "add", "table", "inet", "other")
	s.ban(t, "192.0.2.10", "1h")
	s.wantStatus(t, "192.0.2.10", "192.0.2.1:80", 0)
	s.dm.Stop(t)
	out := s.srv.run(t, "nft", "list", "tables")
	if strings.Contains(out, s.table) || !strings.Contains(out, "inet other") {
		t.Fatalf("tables after a stop with DOORMAN_NFT_REMOVE_ON_STOP=true:\n%s", out)
	}
	// nginx answers, no longer the kernel drops: 500, auth_request failing
	// closed with doorman stopped.
	s.wantStatus(t, "192.0.2.10", "192.0.2.1:80", 500)
}

// TestKernelNeedsCapNetAdmin: with DOORMAN_NFT_TABLE set and no
// CAP_NET_ADMIN, doorman refuses to start (exit 2), says what is missing and
// leaves no state file.
func TestKernelNeedsCapNetAdmin(t *testing.T) {
	requireTool(t, "setpriv", "util-linux")
	ns := newNetNS(t, "cap") // should the drop fail, nothing lands in this machine's tables
	dir := t.TempDir()
	state := filepath.Join(dir, "doorman.db")
	argv := ns.argv("setpriv", "--bounding-set=-net_admin", "--inh-caps=-net_admin", doormanBinary(t))
	code, out, err := testproc.RunDoorman(argv, dir, map[string]string{"DOORMAN_NFT_TABLE": "doorman", "DOORMAN_STATE_FILE": state}, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if code != 2 || !strings.Contains(out, `DOORMAN_NFT_TABLE: "doorman" is set, but`) || !strings.Contains(out, "CAP_NET_ADMIN") {
		t.Fatalf("exit %d, output %q; want 2 and a message naming DOORMAN_NFT_TABLE and CAP_NET_ADMIN", code, out)
	}
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Fatalf("state file after a refused start: %v, want none", err)
	}
	if tables := ns.run(t, "nft", "list", "tables"); tables != "" {
		t.Fatalf("tables after a refused start: %q", tables)
	}
}

// TestKernelClusterBans: bans learned from Redis enter the kernel too, and
// leave it with their unban.
func TestKernelClusterBans(t *testing.T) {
	requireTool(t, "redis-server", "redis-server")
	bin, _ := lookTool("redis-server")
	sock := filepath.Join(t.TempDir(), "redis.sock")
	r, err := testproc.StartRedis(bin, 0, "--unixsocket", sock, "--unixsocketperm", "777")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	prefix := clusterPrefix(t)
	// The server namespace reaches Redis through its unix socket; the peer,
	// on this machine's loopback, through TCP.
	s := startKernelSite(t, map[string]string{"DOORMAN_REDIS_URL": "unix://" + sock, "DOORMAN_REDIS_PREFIX": prefix})
	peer := startDoorman(t, map[string]string{"DOORMAN_REDIS_URL": r.URL, "DOORMAN_REDIS_PREFIX": prefix})
	waitMetric(t, s.dm, "doorman_redis_up", 1, 5*time.Second)
	waitMetric(t, peer, "doorman_redis_up", 1, 5*time.Second)

	s.wantStatus(t, "192.0.2.10", "192.0.2.1:80", 200)
	if code, body := peer.API(t, "POST", "/v1/bans", map[string]string{"ip": "192.0.2.10", "duration": "1h"}); code != 201 {
		t.Fatalf("ban on the peer: %d %s", code, body)
	}
	s.waitStatus(t, "192.0.2.10", "192.0.2.1:80", 0, changeLimit)
	if got := s.kernelElements(t, "bans4"); !slices.Equal(got, []string{"192.0.2.10/32"}) {
		t.Fatalf("bans4 after a ban learned from the cluster: got %v, want [192.0.2.10/32]", got)
	}
	if code, body := peer.API(t, "DELETE", "/v1/bans/192.0.2.10", nil); code != 204 {
		t.Fatalf("unban on the peer: %d %s", code, body)
	}
	s.waitStatus(t, "192.0.2.10", "192.0.2.1:80", 200, changeLimit)
	if got := s.kernelElements(t, "bans4"); len(got) != 0 {
		t.Fatalf("bans4 after the unban learned from the cluster: %v, want none", got)
	}
}
