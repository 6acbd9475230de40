package server

import (
	"bufio"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/doorman/doorman/decide"
)

// series is the value of one series in the fixture's /metrics text; -1 when
// it is missing.
func (f *fixture) series(t *testing.T, name string) float64 {
	t.Helper()
	var sb strings.Builder
	f.metrics.Write(&sb)
	sc := bufio.NewScanner(strings.NewReader(sb.String()))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %q", name, v)
			}
			return n
		}
	}
	return -1
}

func TestGateMetricsSessions(t *testing.T) {
	f, tok := gateFixture(t, "", false)
	ip := "198.51.100.1"
	f.gateReq("/gate", tcp("127.0.0.1"), "X-Real-IP", ip, "X-Doorman-Gate", tok)
	f.gateReq("/forward-auth/gate", tcp("127.0.0.1"), "X-Forwarded-For", ip, "Cookie", "doorman_gate="+tok)
	f.gateReq("/gate", tcp("127.0.0.1"), "X-Real-IP", ip, "X-Doorman-Gate", tok[:len(tok)-2]+"xx")
	f.gateReq("/gate", tcp("127.0.0.1"), "X-Real-IP", ip) // no session: not counted
	for name, want := range map[string]float64{
		`doorman_gate_sessions_checked_total{result="valid"}`:   2,
		`doorman_gate_sessions_checked_total{result="invalid"}`: 1,
	} {
		if got := f.series(t, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
}

func TestGateMetricsPages(t *testing.T) {
	p, f := gatePagesFixture(t)
	f.core.Apply(decide.Ban{Key: netip.MustParsePrefix("192.0.2.66/32"), Until: t0.Add(time.Hour), Count: 1}, t0)
	const csrf = "0123456789abcdefghijkl"
	ok := []string{"X-Real-IP", "198.51.100.1", "Origin", "https://admin.example.com", "Cookie", cookieCSRF + "=" + csrf, "X-Doorman-CSRF", csrf}
	p.req("POST", "/_doorman/gate/totp", "username=alice&code=123456", ok...)
	p.req("POST", "/_doorman/gate/totp", "username=alice&code=123456", "X-Real-IP", "198.51.100.1", "Origin", "https://evil.example")
	p.req("GET", "/_doorman/gate", "", "X-Real-IP", "192.0.2.66")
	p.req("POST", "/_doorman/gate/passkey/finish", "{}", ok...) // no ceremony begun
	begin := p.req("POST", "/_doorman/gate/passkey/begin", "", ok...)
	var login string
	begin.Header.VisitAllCookie(func(_, v []byte) {
		var c fasthttp.Cookie
		if c.ParseBytes(v) == nil && string(c.Key()) == cookieLogin {
			login = string(c.Value())
		}
	})
	if login == "" {
		t.Fatalf("passkey begin: %d, no %s cookie\n%s", begin.StatusCode(), cookieLogin, begin.Body())
	}
	if r := p.req("POST", "/_doorman/gate/passkey/finish", "{}", append(ok[:4:4], "Cookie", cookieCSRF+"="+csrf+"; "+cookieLogin+"="+login,
		"X-Doorman-CSRF", csrf)...); r.StatusCode() != 401 {
		t.Fatalf("passkey finish with a bad assertion: %d, want 401\n%s", r.StatusCode(), r.Body())
	}
	for name, want := range map[string]float64{
		`doorman_gate_signins_total{method="totp",result="wrong"}`:      1,
		`doorman_gate_signins_total{method="totp",result="ok"}`:         0,
		`doorman_gate_signins_total{method="passkey",result="invalid"}`: 1,
		`doorman_gate_signins_total{method="passkey",result="wrong"}`:   1,
		`doorman_gate_signins_total{method="passkey",result="locked"}`:  0,
		`doorman_gate_refused_total{why="cross_site"}`:                  1,
		`doorman_gate_refused_total{why="address"}`:                     1,
		`doorman_gate_sessions_checked_total{result="valid"}`:           0,
	} {
		if got := f.series(t, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
}
