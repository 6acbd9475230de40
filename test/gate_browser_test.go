package test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/webauthn"
	"github.com/chromedp/chromedp"
)

// chromiumJS starts headless Chromium with JavaScript on and returns a tab's context.
func chromiumJS(t *testing.T) context.Context {
	t.Helper()
	requireTool(t, "chromium", "chromium")
	bin, _ := lookTool("chromium")
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin),
		chromedp.NoSandbox, // root in CI; the pages are our own, on loopback
		chromedp.DisableGPU,
		chromedp.WindowSize(900, 800),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("no-proxy-server", true),
		// nginx listens on 127.0.0.1 only; localhost stays the name (a secure context).
		chromedp.Flag("host-resolver-rules", "MAP localhost 127.0.0.1"),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(alloc, chromedp.WithErrorf(t.Logf))
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(func() { cancelTimeout(); cancelCtx(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx
}

// authenticator adds a DevTools virtual authenticator to the tab: CTAP2,
// internal transport (a platform passkey), resident keys, user verification.
func authenticator(t *testing.T, ctx context.Context) webauthn.AuthenticatorID {
	t.Helper()
	if _, err := chromedp.Call(ctx, webauthn.Enable, webauthn.EnableParams{}); err != nil {
		t.Fatal(err)
	}
	res, err := chromedp.Call(ctx, webauthn.AddVirtualAuthenticator, webauthn.AddVirtualAuthenticatorParams{Options: &webauthn.VirtualAuthenticatorOptions{
		Protocol: webauthn.AuthenticatorProtocolCtap2, Ctap2version: webauthn.Ctap2versionCtap21, Transport: webauthn.AuthenticatorTransportInternal,
		HasResidentKey: true, HasUserVerification: true, IsUserVerified: true, AutomaticPresenceSimulation: true}})
	if err != nil {
		t.Fatal(err)
	}
	return res.AuthenticatorID
}

// waitPath waits until the tab's location path (and query) is want,
// polling across the navigations on the way.
func waitPath(t *testing.T, ctx context.Context, want string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	var got string
	for time.Now().Before(deadline) {
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		got, _ = chromedp.Run(c, chromedp.Evaluate[string]("location.pathname + location.search"))
		cancel()
		if got == want {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	status, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`(document.getElementById("status")||{}).textContent||""`))
	t.Fatalf("location %q never became %q; status line %q", got, want, status)
}

func jsString(s string) string { b, _ := json.Marshal(s); return string(b) }

func bodyText(t *testing.T, ctx context.Context) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	if os.Getenv("DOORMAN_UPDATE_SCREENSHOT") != "1" {
		return
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(repoRoot(t), "docs", name), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestGatePasskeyBrowser: real Chromium with a virtual authenticator through
// real nginx: /admin/ → the gate; an enrollment link → a passkey registered
// → in; a new browser context without the cookie → the gate again; sign-in
// with the same passkey → in. The account lock stops TOTP, never a passkey.
func TestGatePasskeyBrowser(t *testing.T) {
	s := startGateSite(t, map[string]string{"DOORMAN_ACCOUNT_MAX_FAILURES": "2"})
	ctx := chromiumJS(t)
	auth := authenticator(t, ctx)

	if err := chromedp.Do(ctx, chromedp.Navigate(s.origin+"/admin/x")); err != nil {
		t.Fatal(err)
	}
	waitPath(t, ctx, "/_doorman/gate?rd=/admin/x")
	screenshot(t, ctx, "gate-page.png")

	status, b := s.d.API(t, "POST", "/v1/gate/enrollments", map[string]string{"username": "alice"})
	var link struct{ URL string }
	if status != 201 || json.Unmarshal(b, &link) != nil {
		t.Fatalf("POST /v1/gate/enrollments: %d %s", status, b)
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(link.URL), chromedp.WaitVisible(chromedp.ID("passkey-register"))); err != nil {
		t.Fatal(err)
	}
	screenshot(t, ctx, "gate-enroll.png")
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.ID("passkey-register"))); err != nil {
		t.Fatal(err)
	}
	waitPath(t, ctx, "/")
	if err := chromedp.Do(ctx, chromedp.Navigate(s.origin+"/admin/x")); err != nil {
		t.Fatal(err)
	}
	if body := bodyText(t, ctx); !strings.Contains(body, protectedBody) {
		t.Fatalf("/admin/ after registering a passkey: %q", body)
	}
	creds, err := chromedp.Call(ctx, webauthn.GetCredentials, webauthn.GetCredentialsParams{AuthenticatorID: auth})
	if err != nil || len(creds.Credentials) != 1 || !creds.Credentials[0].IsResidentCredential {
		t.Fatalf("the authenticator's credentials: %+v %v, want one resident", creds, err)
	}

	// Lock the account with wrong TOTP codes: the passkey still signs in.
	for _, ip := range []string{"127.0.0.31", "127.0.0.32"} {
		if p := s.signIn(t, s.browser(t, ip), "alice", "000000"); p.status != 401 {
			t.Fatalf("wrong code from %s: %d", ip, p.status)
		}
	}

	// A new browser context: no cookie, the same passkey.
	ctx2, cancel := chromedp.NewContext(ctx, chromedp.WithNewBrowserContext())
	defer cancel()
	auth2 := authenticator(t, ctx2)
	// The raw command: cdproto always sends generateCmtgKeyOnNextOperation,
	// which an authenticator without that extension refuses.
	c := creds.Credentials[0]
	addCredential := cdp.Command[map[string]any, cdp.Empty]{Method: webauthn.CommandAddCredential}
	if _, err := chromedp.Call(ctx2, addCredential, map[string]any{"authenticatorId": auth2, "credential": map[string]any{
		"credentialId": c.CredentialID, "isResidentCredential": true, "rpId": c.RpID, "privateKey": c.PrivateKey,
		"userHandle": c.UserHandle, "signCount": c.SignCount}}); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx2, chromedp.Navigate(s.origin+"/admin/x")); err != nil {
		t.Fatal(err)
	}
	waitPath(t, ctx2, "/_doorman/gate?rd=/admin/x")
	if err := chromedp.Do(ctx2, chromedp.WaitVisible(chromedp.ID("passkey-signin")), chromedp.Click(chromedp.ID("passkey-signin"))); err != nil {
		t.Fatal(err)
	}
	waitPath(t, ctx2, "/admin/x")
	if body := bodyText(t, ctx2); !strings.Contains(body, protectedBody) {
		t.Fatalf("/admin/ after a passkey sign-in: %q", body)
	}
	cookies, err := chromedp.Call(ctx2, network.GetCookies, network.GetCookiesParams{URLs: []string{s.origin + "/admin/x"}})
	if err != nil {
		t.Fatal(err)
	}
	var session *network.Cookie
	for _, c := range cookies.Cookies {
		if c.Name == "doorman_gate" {
			session = c
		}
	}
	if session == nil || !session.HTTPOnly || session.SameSite != network.CookieSameSiteLax || session.Path != "/" {
		t.Errorf("doorman_gate cookie %+v, want HttpOnly, SameSite=Lax, Path=/", session)
	}
}
