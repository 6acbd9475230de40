package server

import (
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/engine"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

type fixture struct {
	core    *decide.Core
	dec     *Decider
	api     *API
	now     time.Time
	metrics *engine.Metrics
}

func newFixture(t testing.TB, allow, deny string) *fixture {
	t.Helper()
	al, _ := decide.ParseList(allow)
	dl, _ := decide.ParseList(deny)
	p := decide.Policy{MaxFailures: 3, FindTime: 10 * time.Minute, BanTime: time.Hour, BanFactor: 2,
		MaxBanTime: 168 * time.Hour, IPv4Prefix: 32, IPv6Prefix: 64}
	f := &fixture{core: decide.New(p, decide.NewLists(al, dl, nil), 1000, 1000), now: t0}
	clock := func() time.Time { return f.now }
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	f.metrics = engine.NewMetrics(f.core.Stats, false, clock)
	trusted, _ := decide.ParseList("127.0.0.0/8,::1/128")
	local := engine.NewLocal(f.core, nil, log, f.metrics)
	f.dec = &Decider{Core: local, Header: "X-Real-IP", Trusted: NewTrusted(trusted), Now: clock, Metrics: f.metrics, Log: log}
	f.api = &API{Service: local, Now: clock, Metrics: f.metrics, Log: log}
	return f
}

// decideReq runs the decision handler for a request from peer with headers.
func (f *fixture) decideReq(peer net.Addr, headers ...string) *fasthttp.Response {
	var req fasthttp.Request
	req.SetRequestURI("/decide")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	var ctx fasthttp.RequestCtx
	ctx.Init(&req, peer, nil)
	f.dec.Handle(&ctx)
	var resp fasthttp.Response
	ctx.Response.CopyTo(&resp)
	return &resp
}

func tcp(ip string) net.Addr {
	return net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(ip), 40000))
}

func TestClientAddress(t *testing.T) {
	f := newFixture(t, "", "203.0.113.0/24,2001:db8:bad::/48")
	tests := []struct {
		name    string
		peer    net.Addr
		headers []string
		want    string // reason
	}{
		{"trusted peer, header allowed", tcp("127.0.0.1"), []string{"X-Real-IP", "192.0.2.1"}, "allowed"},
		{"trusted peer, header denylisted", tcp("127.0.0.1"), []string{"X-Real-IP", "203.0.113.9"}, "denylisted"},
		{"trusted ipv6 peer", tcp("::1"), []string{"X-Real-IP", "203.0.113.9"}, "denylisted"},
		{"header name case-insensitive", tcp("127.0.0.1"), []string{"x-real-ip", "203.0.113.9"}, "denylisted"},
		{"trusted peer, no header", tcp("127.0.0.1"), nil, "no-client-ip"},
		{"trusted peer, repeated header", tcp("127.0.0.1"), []string{"X-Real-IP", "192.0.2.1", "X-Real-IP", "192.0.2.1"}, "no-client-ip"},
		{"trusted peer, garbage", tcp("127.0.0.1"), []string{"X-Real-IP", "192.0.2.1, 10.0.0.1"}, "no-client-ip"},
		{"trusted peer, empty", tcp("127.0.0.1"), []string{"X-Real-IP", ""}, "no-client-ip"},
		{"trusted peer, host:port", tcp("127.0.0.1"), []string{"X-Real-IP", "192.0.2.1:80"}, "no-client-ip"},
		{"trusted peer, mapped", tcp("127.0.0.1"), []string{"X-Real-IP", "::ffff:203.0.113.9"}, "denylisted"},
		{"trusted peer, zone dropped", tcp("127.0.0.1"), []string{"X-Real-IP", "2001:db8:bad::1%eth0"}, "denylisted"},
		{"other headers ignored", tcp("127.0.0.1"), []string{"X-Forwarded-For", "203.0.113.9", "X-Real-IP", "192.0.2.1"}, "allowed"},
		{"untrusted peer, header ignored", tcp("203.0.113.9"), []string{"X-Real-IP", "192.0.2.1"}, "denylisted"},
		{"untrusted peer, no header", tcp("192.0.2.7"), nil, "allowed"},
		{"untrusted mapped peer", tcp("::ffff:203.0.113.9"), nil, "denylisted"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := f.decideReq(tc.peer, tc.headers...)
			if got := string(resp.Header.Peek("X-Doorman-Reason")); got != tc.want {
				t.Fatalf("reason = %q, want %q", got, tc.want)
			}
			wantStatus, wantVerdict := 403, "deny"
			if tc.want == "allowed" {
				wantStatus, wantVerdict = 204, "allow"
			}
			if resp.StatusCode() != wantStatus || string(resp.Header.Peek("X-Doorman-Verdict")) != wantVerdict {
				t.Fatalf("status %d verdict %q, want %d %q", resp.StatusCode(), resp.Header.Peek("X-Doorman-Verdict"), wantStatus, wantVerdict)
			}
			if len(resp.Body()) != 0 {
				t.Fatalf("body %q, want empty", resp.Body())
			}
		})
	}
}

func TestUnixPeerIsTrusted(t *testing.T) {
	f := newFixture(t, "", "203.0.113.0/24")
	f.dec.Unix = true
	resp := f.decideReq(&net.UnixAddr{Name: "@", Net: "unix"}, "X-Real-IP", "203.0.113.1")
	if got := string(resp.Header.Peek("X-Doorman-Reason")); got != "denylisted" {
		t.Fatalf("reason = %q, want denylisted", got)
	}
	if resp := f.decideReq(&net.UnixAddr{Name: "@", Net: "unix"}); resp.StatusCode() != 403 {
		t.Fatalf("unix peer without header: %d, want 403", resp.StatusCode())
	}
}

func TestBannedRetryAfter(t *testing.T) {
	f := newFixture(t, "", "")
	f.core.BanPrefix(netip.MustParsePrefix("192.0.2.1/32"), 90*time.Second+time.Millisecond, "", t0)
	f.now = t0.Add(30 * time.Second)
	resp := f.decideReq(tcp("127.0.0.1"), "X-Real-IP", "192.0.2.1")
	if resp.StatusCode() != 403 || string(resp.Header.Peek("X-Doorman-Reason")) != "banned" {
		t.Fatalf("got %d %s", resp.StatusCode(), resp.Header.Peek("X-Doorman-Reason"))
	}
	if got := string(resp.Header.Peek("Retry-After")); got != "61" {
		t.Fatalf("Retry-After = %q, want 61 (rounded up)", got)
	}
}

func TestDryRun(t *testing.T) {
	f := newFixture(t, "10.0.0.0/8", "")
	f.dec.DryRun = true
	resp := f.decideReq(tcp("127.0.0.1"), "X-Real-IP", "192.0.2.1")
	if resp.StatusCode() != 204 || string(resp.Header.Peek("X-Doorman-Reason")) != "dry-run-not-allowlisted" {
		t.Fatalf("got %d %q", resp.StatusCode(), resp.Header.Peek("X-Doorman-Reason"))
	}
	var sb strings.Builder
	f.metrics.Write(&sb)
	if !strings.Contains(sb.String(), `doorman_decisions_total{verdict="deny",reason="not-allowlisted"} 1`) {
		t.Fatalf("would-be verdict not counted:\n%s", sb.String())
	}
}

func TestHandlerDoesNotAllocate(t *testing.T) {
	f := newFixture(t, "", "203.0.113.0/24")
	f.core.BanPrefix(netip.MustParsePrefix("192.0.2.66/32"), time.Hour, "", t0)
	for _, ip := range []string{"192.0.2.1", "203.0.113.1", "192.0.2.66"} {
		var req fasthttp.Request
		req.SetRequestURI("/decide")
		req.Header.Set("X-Real-IP", ip)
		var ctx fasthttp.RequestCtx
		ctx.Init(&req, tcp("127.0.0.1"), nil)
		f.dec.Handle(&ctx) // warm up header buffers
		n := testing.AllocsPerRun(1000, func() {
			ctx.Response.Reset()
			f.dec.Handle(&ctx)
		})
		if n != 0 {
			t.Errorf("%s: %v allocs per decision, want 0", ip, n)
		}
	}
}

// apiReq runs the API handler.
func (f *fixture) apiReq(method, uri, body string, headers ...string) (int, map[string]any) {
	var req fasthttp.Request
	req.Header.SetMethod(method)
	req.SetRequestURI(uri)
	req.SetBodyString(body)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	var ctx fasthttp.RequestCtx
	ctx.Init(&req, tcp("127.0.0.1"), nil)
	f.api.Handle(&ctx)
	var out map[string]any
	if b := ctx.Response.Body(); len(b) > 0 {
		if err := json.Unmarshal(b, &out); err != nil && !strings.HasPrefix(uri, "/metrics") {
			panic("not JSON: " + string(b))
		}
	}
	return ctx.Response.StatusCode(), out
}

func TestWebhookBansBeforeAnswering(t *testing.T) {
	f := newFixture(t, "", "")
	for i := 1; i <= 3; i++ {
		status, out := f.apiReq("POST", "/v1/failures", `{"ip":"203.0.113.7","username":"admin"}`)
		if status != 200 || out["failures"] != float64(i) || out["key"] != "203.0.113.7/32" || out["ip"] != "203.0.113.7" {
			t.Fatalf("failure %d: %d %v", i, status, out)
		}
		if got, want := out["banned"], i == 3; got != want {
			t.Fatalf("failure %d: banned %v", i, got)
		}
		if i == 3 && out["until"] != t0.Add(time.Hour).Format(time.RFC3339) {
			t.Fatalf("until = %v", out["until"])
		}
	}
	// In force for the very next decision.
	if resp := f.decideReq(tcp("127.0.0.1"), "X-Real-IP", "203.0.113.7"); resp.StatusCode() != 403 {
		t.Fatalf("next decision: %d, want 403", resp.StatusCode())
	}
	status, out := f.apiReq("GET", "/v1/bans", "")
	bans, _ := out["bans"].([]any)
	if status != 200 || len(bans) != 1 {
		t.Fatalf("GET /v1/bans: %d %v", status, out)
	}
	b := bans[0].(map[string]any)
	if b["key"] != "203.0.113.7/32" || b["reason"] != "failures" || b["count"] != float64(1) {
		t.Fatalf("ban = %v", b)
	}
	status, out = f.apiReq("GET", "/v1/decide?ip=203.0.113.7", "")
	if status != 200 || out["verdict"] != "deny" || out["reason"] != "banned" || out["until"] == nil {
		t.Fatalf("explain: %d %v", status, out)
	}
	if status, _ := f.apiReq("DELETE", "/v1/bans/203.0.113.7", ""); status != 204 {
		t.Fatalf("DELETE: %d, want 204", status)
	}
	if status, _ := f.apiReq("DELETE", "/v1/bans/203.0.113.7", ""); status != 404 {
		t.Fatalf("second DELETE: %d, want 404", status)
	}
	if resp := f.decideReq(tcp("127.0.0.1"), "X-Real-IP", "203.0.113.7"); resp.StatusCode() != 204 {
		t.Fatalf("after unban: %d, want 204", resp.StatusCode())
	}
}

func TestSuccessResets(t *testing.T) {
	f := newFixture(t, "", "")
	f.apiReq("POST", "/v1/failures", `{"ip":"203.0.113.7"}`)
	f.apiReq("POST", "/v1/failures", `{"ip":"203.0.113.7"}`)
	if status, _ := f.apiReq("POST", "/v1/successes", `{"ip":"203.0.113.7"}`); status != 200 {
		t.Fatalf("success: %d", status)
	}
	if _, out := f.apiReq("POST", "/v1/failures", `{"ip":"203.0.113.7"}`); out["failures"] != float64(1) {
		t.Fatalf("after success: %v", out)
	}
}

func TestManualBanAPI(t *testing.T) {
	f := newFixture(t, "", "")
	status, out := f.apiReq("POST", "/v1/bans", `{"ip":"198.51.100.0/24","duration":"30m","reason":"scanner"}`)
	if status != 201 || out["key"] != "198.51.100.0/24" || out["reason"] != "manual" || out["note"] != "scanner" ||
		out["until"] != t0.Add(30*time.Minute).Format(time.RFC3339) {
		t.Fatalf("POST /v1/bans: %d %v", status, out)
	}
	if resp := f.decideReq(tcp("127.0.0.1"), "X-Real-IP", "198.51.100.200"); resp.StatusCode() != 403 {
		t.Fatalf("inside the range: %d", resp.StatusCode())
	}
	if status, _ := f.apiReq("DELETE", "/v1/bans/198.51.100.0/24", ""); status != 204 {
		t.Fatalf("DELETE CIDR: %d", status)
	}
	if resp := f.decideReq(tcp("127.0.0.1"), "X-Real-IP", "198.51.100.200"); resp.StatusCode() != 204 {
		t.Fatalf("after unban: %d", resp.StatusCode())
	}
}

func TestAPIErrors(t *testing.T) {
	f := newFixture(t, "", "")
	tests := []struct {
		name, method, uri, body string
		want                    int
	}{
		{"bad json", "POST", "/v1/failures", `{"ip":`, 400},
		{"missing ip", "POST", "/v1/failures", `{"username":"x"}`, 400},
		{"bad ip", "POST", "/v1/failures", `{"ip":"999.1.1.1"}`, 400},
		{"cidr is not an ip", "POST", "/v1/failures", `{"ip":"10.0.0.0/8"}`, 400},
		{"wrong type", "POST", "/v1/failures", `{"ip":12345}`, 400},
		{"unknown field", "POST", "/v1/failures", `{"ip":"192.0.2.1","ipp":"x"}`, 400},
		{"trailing data", "POST", "/v1/failures", `{"ip":"192.0.2.1"} {}`, 400},
		{"array", "POST", "/v1/failures", `["192.0.2.1"]`, 400},
		{"empty body", "POST", "/v1/successes", ``, 400},
		{"body too large", "POST", "/v1/failures", `{"ip":"192.0.2.1","username":"` + strings.Repeat("a", 5000) + `"}`, 413},
		{"wrong method", "GET", "/v1/failures", ``, 405},
		{"wrong method bans", "PUT", "/v1/bans", ``, 405},
		{"wrong method delete", "POST", "/v1/bans/192.0.2.1", ``, 405},
		{"bad duration", "POST", "/v1/bans", `{"ip":"192.0.2.1","duration":"forever"}`, 400},
		{"negative duration", "POST", "/v1/bans", `{"ip":"192.0.2.1","duration":"-1h"}`, 400},
		{"too long", "POST", "/v1/bans", `{"ip":"192.0.2.1","duration":"100000h"}`, 400},
		{"bad cidr", "POST", "/v1/bans", `{"ip":"10.0.0.0/33"}`, 400},
		{"unban garbage", "DELETE", "/v1/bans/nope", ``, 400},
		{"unban none", "DELETE", "/v1/bans/192.0.2.1", ``, 404},
		{"decide without ip", "GET", "/v1/decide", ``, 400},
		{"unknown endpoint", "GET", "/v1/nope", ``, 404},
		{"outside v1", "GET", "/admin", ``, 404},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, out := f.apiReq(tc.method, tc.uri, tc.body)
			if status != tc.want {
				t.Fatalf("status %d, want %d (%v)", status, tc.want, out)
			}
			if msg, _ := out["error"].(string); msg == "" {
				t.Fatalf("no error message: %v", out)
			}
		})
	}
	if st := f.core.Stats(f.now); st.BanRecords+st.Tracked != 0 {
		t.Fatalf("bad input changed state: %d records", st.BanRecords+st.Tracked)
	}
}

func TestToken(t *testing.T) {
	f := newFixture(t, "", "")
	f.api.Token = "s3cret"
	for _, tc := range []struct {
		name string
		hdr  []string
		want int
	}{
		{"none", nil, 401},
		{"wrong", []string{"Authorization", "Bearer nope"}, 401},
		{"not bearer", []string{"Authorization", "Basic s3cret"}, 401},
		{"prefix of the token", []string{"Authorization", "Bearer s3cre"}, 401},
		{"right", []string{"Authorization", "Bearer s3cret"}, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if status, _ := f.apiReq("GET", "/v1/bans", "", tc.hdr...); status != tc.want {
				t.Fatalf("status %d, want %d", status, tc.want)
			}
		})
	}
	if status, _ := f.apiReq("GET", "/healthz", ""); status != 200 {
		t.Fatalf("/healthz needs no token: %d", status)
	}
	if status, _ := f.apiReq("GET", "/metrics", ""); status != 200 {
		t.Fatalf("/metrics needs no token: %d", status)
	}
}

func TestMetrics(t *testing.T) {
	f := newFixture(t, "", "")
	for range 3 {
		f.apiReq("POST", "/v1/failures", `{"ip":"203.0.113.7"}`)
	}
	f.decideReq(tcp("127.0.0.1"), "X-Real-IP", "203.0.113.7")
	f.decideReq(tcp("127.0.0.1"), "X-Real-IP", "203.0.113.8")
	var sb strings.Builder
	f.metrics.Write(&sb)
	for _, want := range []string{
		`doorman_decisions_total{verdict="deny",reason="banned"} 1`,
		`doorman_decisions_total{verdict="allow",reason="allowed"} 1`,
		`doorman_failures_total 3`,
		`doorman_bans_issued_total{reason="failures"} 1`,
		`doorman_bans_active 1`,
	} {
		if !strings.Contains(sb.String(), want+"\n") {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// A web page cannot make a browser on this host change doorman's state
// through a loopback API without a token (a cross-site text/plain form).
func TestAPIRefusesBrowserPages(t *testing.T) {
	f := newFixture(t, "", "")
	body := `{"ip":"192.0.2.1","duration":"1h"}`
	for _, h := range [][]string{
		{"Origin", "https://evil.example"},
		{"Origin", "null"},
		{"Sec-Fetch-Site", "cross-site"},
		{"Sec-Fetch-Site", "same-site"},
	} {
		if status, _ := f.apiReq("POST", "/v1/bans", body, h...); status != 403 {
			t.Errorf("POST /v1/bans with %s: %s: %d, want 403", h[0], h[1], status)
		}
	}
	if bans := f.core.Bans(f.now); len(bans) != 0 {
		t.Fatalf("a browser page banned %v", bans)
	}
	if status, _ := f.apiReq("POST", "/v1/bans", body, "Sec-Fetch-Site", "none"); status != 201 {
		t.Fatalf("Sec-Fetch-Site: none (typed by the user): %d, want 201", status)
	}
	if status, _ := f.apiReq("POST", "/v1/bans", `{"ip":"192.0.2.2"}`); status != 201 {
		t.Fatalf("an API client: %d, want 201", status)
	}
}
