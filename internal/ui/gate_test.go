package ui

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"

	"github.com/doorman/doorman/internal/gate"
)

func TestGateCredentials(t *testing.T) {
	f := newFixture(t, "s3cret")
	o, _ := url.Parse("https://admin.example.com")
	g, _, err := gate.New(gate.Options{Origins: []*url.URL{o}, SessionTTL: time.Hour, EnrollTTL: time.Minute, TOTP: true,
		Service: f.local, Now: func() time.Time { return f.now }, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	f.ui.UseGate(g)
	cookie, csrf := f.login(t)
	if r := f.req("POST", "/ui/gate/enroll", cookie, "user=alice"); r.status != 403 {
		t.Errorf("enrollment link without csrf: %d, want 403", r.status)
	}
	if r := f.req("POST", "/ui/gate/enroll", cookie, "user=Alice&csrf="+csrf); r.status != 303 {
		t.Fatalf("enrollment link: %d", r.status)
	}
	page := f.req("GET", "/ui/", cookie, "").body
	m := regexp.MustCompile(`Enrollment link for alice, valid once until [0-9:]+ UTC: https://admin\.example\.com/_doorman/enroll\?t=([A-Za-z0-9_-]+)`).FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no enrollment link in the page:\n%s", page)
	}
	e, err := g.OpenEnrollment(m[1], f.now)
	if err != nil || e.User != "alice" {
		t.Fatalf("the page's link: %+v %v", e, err)
	}
	key, err := otp.NewKeyFromURL(e.TOTPURI)
	if err != nil {
		t.Fatal(err)
	}
	code, _ := totp.GenerateCode(key.Secret(), f.now)
	if _, err := g.ConfirmTOTP(context.Background(), e.ID, netip.Addr{}, code, f.now); err != nil {
		t.Fatal(err)
	}
	id := g.Credentials()[0].ID
	page = f.req("GET", "/ui/", cookie, "").body
	if !strings.Contains(page, "Gate credentials") || !strings.Contains(page, `name="id" value="`+id+`"`) || strings.Contains(page, key.Secret()) {
		t.Fatalf("the page does not list alice's credential (or shows its secret):\n%s", page)
	}
	if r := f.req("POST", "/ui/gate/revoke", cookie, "id="+id+"&csrf="+csrf); r.status != 303 || len(g.Credentials()) != 0 {
		t.Fatalf("revoke: %d, %d credentials left", r.status, len(g.Credentials()))
	}
	if page := f.req("GET", "/ui/", cookie, "").body; !strings.Contains(page, "totp; its sessions have ended") {
		t.Errorf("no message after the revocation")
	}
	if r := f.req("POST", "/ui/gate/revoke", cookie, "id=00112233445566778899aabbccddeeff&csrf="+csrf); r.status != 303 {
		t.Fatalf("revoke: %d", r.status)
	}
	if page := f.req("GET", "/ui/", cookie, "").body; !strings.Contains(page, "No credential 00112233445566778899aabbccddeeff.") {
		t.Errorf("no message after revoking an unknown credential")
	}
}
