package test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
)

// feedServer is a deny feed on loopback whose body the test changes.
type feedServer struct {
	mu         sync.Mutex
	body       string
	version    int
	status     int
	full, cond int // 200 answers, 304 answers
	srv        *httptest.Server
}

func startFeedServer(t *testing.T, body string) *feedServer {
	f := &feedServer{body: body, version: 1, status: 200}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.status != 200 {
			w.WriteHeader(f.status)
			return
		}
		etag := fmt.Sprintf(`"v%d"`, f.version)
		if r.Header.Get("If-None-Match") == etag {
			f.cond++
			w.WriteHeader(http.StatusNotModified)
			return
		}
		f.full++
		w.Header().Set("ETag", etag)
		io.WriteString(w, f.body)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *feedServer) set(body string, status int) {
	f.mu.Lock()
	f.body, f.status = body, status
	f.version++
	f.mu.Unlock()
}

func (f *feedServer) counts() (full, cond int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.full, f.cond
}

type explained struct {
	Verdict, Reason, Feed, Country, ASN, Network string
}

func explain(t *testing.T, d *Doorman, ip string) explained {
	t.Helper()
	code, body := d.API(t, "GET", "/v1/decide?ip="+ip, nil)
	if code != 200 {
		t.Fatalf("GET /v1/decide?ip=%s: %d %s", ip, code, body)
	}
	var e explained
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatal(err)
	}
	return e
}

// waitExplain polls until ip's verdict has reason and feed name (any feed
// when feed is "*").
func waitExplain(t *testing.T, d *Doorman, ip, reason, feed string, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		e := explain(t, d, ip)
		if e.Reason == reason && (feed == "*" || e.Feed == feed) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s/%q after %v, want %s/%q; log:\n%s", ip, e.Reason, e.Feed, limit, reason, feed, tail(d.Log(t), 30))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func waitMetricAbove(t *testing.T, d *Doorman, name string, min float64, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for metricValue(t, d, name) <= min {
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v after %v, want above %v", name, metricValue(t, d, name), limit, min)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func prefixLines(n int, format string) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, format+"\n", i)
	}
	return b.String()
}

// TestFeeds: a deny feed from a loopback server denies after the first
// fetch, follows changes, answers conditional requests, keeps its last
// good copy through errors, garbage, a 0.0.0.0/0 and a shrink, and after a
// restart with the server down.
func TestFeeds(t *testing.T) {
	drop := "; Spamhaus DROP List\n203.0.113.0/25 ; SBL1\n10.0.0.0/8 ; bogon\n" + prefixLines(40, "198.51.100.%d")
	fs := startFeedServer(t, drop)
	d := startDoorman(t, map[string]string{"DOORMAN_DENY_FEEDS": "spamhaus=" + fs.srv.URL + "/drop.txt",
		"DOORMAN_FEED_REFRESH": "1s", "DOORMAN_NEVER_BAN": "203.0.113.9"})
	waitExplain(t, d, "203.0.113.5", "feed", "spamhaus", 10*time.Second)
	if e := explain(t, d, "203.0.113.9"); e.Verdict != "allow" {
		t.Errorf("never-ban address in the feed: %+v, want allow", e)
	}
	if e := explain(t, d, "10.1.2.3"); e.Verdict != "allow" {
		t.Errorf("private address listed by the feed: %+v, want allow (skipped)", e)
	}
	if v := metricValue(t, d, `doorman_feed_skipped{feed="spamhaus",why="local"}`); v != 1 {
		t.Errorf("skipped local = %v, want 1", v)
	}
	// The decision listener says feed too.
	req, _ := http.NewRequest("GET", "http://doorman/decide", nil)
	req.Header.Set("X-Real-IP", "203.0.113.5")
	resp, err := httpClientFor(d.DecideAddr).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 || resp.Header.Get("X-Doorman-Reason") != "feed" {
		t.Errorf("/decide: %d %q, want 403 feed", resp.StatusCode, resp.Header.Get("X-Doorman-Reason"))
	}

	t.Run("unchanged answers 304", func(t *testing.T) {
		full, cond := fs.counts()
		deadline := time.Now().Add(10 * time.Second)
		for {
			f2, c2 := fs.counts()
			if c2 >= cond+2 {
				if f2 != full {
					t.Errorf("an unchanged feed was downloaded again (%d full answers, was %d)", f2, full)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no conditional request in 10s")
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
	t.Run("a change is picked up", func(t *testing.T) {
		fs.set(drop+"192.0.2.0/24\n", 200)
		waitExplain(t, d, "192.0.2.77", "feed", "spamhaus", 10*time.Second)
	})
	for _, bad := range []struct {
		name, body string
		status     int
	}{
		{"server error", "", 500},
		{"garbage", "<html><body>\n<h1>Please log in</h1>\n<p>to download</p>\n</body></html>\n", 200},
		{"everything", "0.0.0.0/0\n::/0\n", 200},
		{"shrunk to 10%", prefixLines(4, "198.51.100.%d"), 200},
	} {
		t.Run(bad.name+" keeps the last good copy", func(t *testing.T) {
			before := metricValue(t, d, `doorman_feed_failures_total{feed="spamhaus"}`)
			fs.set(bad.body, bad.status)
			waitMetricAbove(t, d, `doorman_feed_failures_total{feed="spamhaus"}`, before, 10*time.Second)
			for _, ip := range []string{"203.0.113.5", "198.51.100.30", "192.0.2.77"} {
				if e := explain(t, d, ip); e.Reason != "feed" {
					t.Errorf("%s after a bad fetch: %+v, want still denied by the feed", ip, e)
				}
			}
		})
	}
	t.Run("restart with the server down", func(t *testing.T) {
		fs.srv.Close()
		d.Restart(t)
		if e := explain(t, d, "192.0.2.77"); e.Reason != "feed" || e.Feed != "spamhaus" {
			t.Errorf("after restart without the feed server: %+v, want denied by spamhaus from the kept copy", e)
		}
	})
}

// TestFeedFromAnotherDoorman: B lists A's /v1/feed; A's bans deny on B,
// A's unban leaves B; a wrong token is refused and counted.
func TestFeedFromAnotherDoorman(t *testing.T) {
	a := startDoorman(t, map[string]string{"DOORMAN_API_TOKEN": "token-of-a"})
	feedURL := "http://" + a.APIAddr + "/v1/feed"
	b := startDoorman(t, map[string]string{"DOORMAN_DENY_FEEDS": "a=" + feedURL, "DOORMAN_FEED_TOKENS": "a=token-of-a", "DOORMAN_FEED_REFRESH": "1s"})
	c := startDoorman(t, map[string]string{"DOORMAN_DENY_FEEDS": "a=" + feedURL, "DOORMAN_FEED_TOKENS": "a=wrong", "DOORMAN_FEED_REFRESH": "1s"})
	for _, ip := range []string{"192.0.2.50", "198.51.100.7", "198.51.100.8"} {
		if code, body := a.API(t, "POST", "/v1/bans", map[string]string{"ip": ip, "duration": "1h"}); code != 201 {
			t.Fatalf("ban on A: %d %s", code, body)
		}
	}
	waitExplain(t, b, "192.0.2.50", "feed", "a", 10*time.Second)
	for _, ip := range []string{"198.51.100.7", "198.51.100.8"} {
		if code, _ := a.API(t, "DELETE", "/v1/bans/"+ip, nil); code != 204 {
			t.Fatalf("unban on A: %d", code)
		}
	}
	// Two of three bans lifted: a shrink by more than half, accepted from a
	// doorman feed (X-Doorman-Feed: bans).
	waitExplain(t, b, "198.51.100.7", "allowed", "", 10*time.Second)
	if e := explain(t, b, "192.0.2.50"); e.Reason != "feed" {
		t.Errorf("192.0.2.50 on B: %+v, want still denied", e)
	}
	waitMetricAbove(t, c, `doorman_feed_failures_total{feed="a"}`, 0, 10*time.Second)
	if e := explain(t, c, "192.0.2.50"); e.Verdict != "allow" {
		t.Errorf("with a wrong token: %+v, want nothing denied", e)
	}
	if !strings.Contains(c.Log(t), "401") {
		t.Errorf("the refused fetch is not logged with its status")
	}
}

// writeMMDB writes a test database of networks to records.
func writeMMDB(t *testing.T, path, dbType string, records map[string]mmdbtype.Map) {
	t.Helper()
	w, err := mmdbwriter.New(mmdbwriter.Options{DatabaseType: dbType, IncludeReservedNetworks: true, RecordSize: 24})
	if err != nil {
		t.Fatal(err)
	}
	for cidr, rec := range records {
		_, n, err := net.ParseCIDR(cidr)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Insert(n, rec); err != nil {
			t.Fatalf("insert %s: %v", cidr, err)
		}
	}
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteTo(f); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func country(cc string) mmdbtype.Map {
	return mmdbtype.Map{"country": mmdbtype.Map{"iso_code": mmdbtype.String(cc)}}
}

func asn(n uint32, org string) mmdbtype.Map {
	return mmdbtype.Map{"autonomous_system_number": mmdbtype.Uint32(n), "autonomous_system_organization": mmdbtype.String(org)}
}

// TestCountriesAndNetworks: generated country and ASN databases; allowed
// countries admit only themselves, denied networks deny, range bans follow
// the announced network, doorman check shows country and network, and a
// corrupt database on SIGHUP keeps the one in use.
func TestCountriesAndNetworks(t *testing.T) {
	dir := t.TempDir()
	geo, asnDB := filepath.Join(dir, "country.mmdb"), filepath.Join(dir, "asn.mmdb")
	writeMMDB(t, geo, "GeoLite2-Country", map[string]mmdbtype.Map{
		"192.0.2.0/24": country("DE"), "198.51.100.0/24": country("FR"), "203.0.113.0/24": country("DE"), "2001:db8::/33": country("DE"),
	})
	writeMMDB(t, asnDB, "GeoLite2-ASN", map[string]mmdbtype.Map{
		"203.0.113.0/24": asn(64500, "Example Hosting"), "198.51.100.0/25": asn(64501, "Example Transit"),
	})
	d := startDoorman(t, map[string]string{"DOORMAN_GEOIP_DB": geo, "DOORMAN_ASN_DB": asnDB,
		"DOORMAN_ALLOW_COUNTRIES": "de,FR", "DOORMAN_DENY_ASNS": "AS64500",
		"DOORMAN_MAX_FAILURES": "1", "DOORMAN_RANGE_THRESHOLD": "3", "DOORMAN_IPV4_RANGE_PREFIX": "28"})
	for _, tc := range []struct{ ip, verdict, reason string }{
		{"192.0.2.1", "allow", "allowed"},
		{"198.51.100.200", "allow", "allowed"},
		{"203.0.113.1", "deny", "asn"},
		{"2001:db8::1", "allow", "allowed"},
		{"2001:db8:8000::1", "deny", "country"},
	} {
		if e := explain(t, d, tc.ip); e.Verdict != tc.verdict || e.Reason != tc.reason {
			t.Errorf("%s: %+v, want %s/%s", tc.ip, e, tc.verdict, tc.reason)
		}
	}
	if e := explain(t, d, "203.0.113.1"); e.Country != "DE" || e.ASN != "AS64500" || e.Network != "203.0.113.0/24" {
		t.Errorf("explain 203.0.113.1: %+v, want DE, AS64500, 203.0.113.0/24", e)
	}
	cmd := exec.Command(doormanBinary(t), "check", "203.0.113.1")
	cmd.Env = append(os.Environ(), "DOORMAN_API_ADDR="+d.APIAddr)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "(asn)") || !strings.Contains(string(out), "country DE, network 203.0.113.0/24 AS64500") {
		t.Errorf("doorman check: %v\n%s", err, out)
	}

	t.Run("range bans follow the announced network", func(t *testing.T) {
		for _, ip := range []string{"198.51.100.1", "198.51.100.40", "198.51.100.90"} {
			if code, body := d.API(t, "POST", "/v1/failures", map[string]string{"ip": ip}); code != 200 {
				t.Fatalf("failure %s: %d %s", ip, code, body)
			}
		}
		code, body := d.API(t, "GET", "/v1/bans", nil)
		if code != 200 || !strings.Contains(string(body), `"198.51.100.0/25"`) {
			t.Errorf("bans: %d %s, want a range ban of the announced 198.51.100.0/25 (not the fixed /28)", code, body)
		}
	})
	t.Run("a corrupt database on SIGHUP keeps the one in use", func(t *testing.T) {
		if err := os.WriteFile(geo, []byte("not a database"), 0o600); err != nil {
			t.Fatal(err)
		}
		before := metricValue(t, d, `doorman_reloads_total{result="error"}`)
		if err := d.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for metricValue(t, d, `doorman_reloads_total{result="error"}`) <= before {
			if time.Now().After(deadline) {
				t.Fatalf("no reload failure counted; log:\n%s", tail(d.Log(t), 20))
			}
			time.Sleep(20 * time.Millisecond)
		}
		if e := explain(t, d, "192.0.2.1"); e.Verdict != "allow" || e.Country != "DE" {
			t.Errorf("after a corrupt database: %+v, want the old data", e)
		}
		writeMMDB(t, geo, "GeoLite2-Country", map[string]mmdbtype.Map{"192.0.2.0/24": country("NL"), "198.51.100.0/24": country("FR")})
		if err := d.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		waitExplain(t, d, "192.0.2.1", "country", "", 5*time.Second)
	})
}
