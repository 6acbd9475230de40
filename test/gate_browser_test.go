package test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
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
// real nginx: /admin/ → the gate; an enrollment link (Continue) → a passkey registered
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
	if err := chromedp.Do(ctx, chromedp.Navigate(link.URL), chromedp.WaitVisible(chromedp.ID("enroll-continue")),
		chromedp.Click(chromedp.ID("enroll-continue"))); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.ID("passkey-register"))); err != nil {
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
	passkeyRoundTrips(t, ctx2, s.origin)
}

// passkeyRoundTripJS signs in N times on the gate page, as gate.js does,
// and returns each round trip in ms: [total, the begin POST, the finish POST,
// a GET of gate.css through the same nginx for comparison].
const passkeyRoundTripJS = `(async (n) => {
  const csrf = document.getElementById("gate").dataset.csrf;
  const b64u = (buf) => btoa(String.fromCharCode(...new Uint8Array(buf))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  const unb64u = (s) => Uint8Array.from(atob(s.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0)).buffer;
  const post = async (path, body) => {
    const r = await fetch(path, {method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-Doorman-CSRF": csrf}, body: JSON.stringify(body || {})});
    const j = await r.json();
    if (!r.ok) throw new Error(path + ": " + r.status + " " + j.error);
    return j;
  };
  const out = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    const pk = (await post("/_doorman/gate/passkey/begin")).publicKey;
    const t1 = performance.now();
    pk.challenge = unb64u(pk.challenge);
    (pk.allowCredentials || []).forEach((c) => { c.id = unb64u(c.id); });
    const c = await navigator.credentials.get({publicKey: pk});
    const t2 = performance.now();
    const j = await post("/_doorman/gate/passkey/finish?rd=%2Fadmin%2Fx", {id: c.id, rawId: b64u(c.rawId), type: c.type,
      response: {clientDataJSON: b64u(c.response.clientDataJSON), authenticatorData: b64u(c.response.authenticatorData),
        signature: b64u(c.response.signature), userHandle: c.response.userHandle ? b64u(c.response.userHandle) : null}});
    if (j.rd !== "/admin/x" || j.username !== "alice") throw new Error("answer " + JSON.stringify(j));
    const t3 = performance.now();
    await fetch("/_doorman/gate.css", {cache: "no-store"}).then((r) => r.text());
    out.push([t3 - t0, t1 - t0, t3 - t2, performance.now() - t3]);
  }
  return out;
})`

// passkeyRoundTrips measures the passkey sign-in round trip (docs/benchmarks.md):
// from the begin POST to the finish answer, the virtual authenticator in
// between, through nginx; every one must sign alice in.
func passkeyRoundTrips(t *testing.T, ctx context.Context, origin string) {
	t.Helper()
	const n = 25
	if err := chromedp.Do(ctx, chromedp.Navigate(origin+"/_doorman/gate?rd=/admin/x"), chromedp.WaitVisible(chromedp.ID("passkey-signin"))); err != nil {
		t.Fatal(err)
	}
	runs, err := chromedp.Run(ctx, chromedp.Evaluate[[][4]float64](passkeyRoundTripJS+"("+strconv.Itoa(n)+")", chromedp.EvalAwaitPromise))
	if err != nil || len(runs) != n {
		t.Fatalf("%d passkey sign-ins: %d done, %v", n, len(runs), err)
	}
	var col [4][]float64
	for _, r := range runs {
		for i := range col {
			col[i] = append(col[i], r[i])
		}
	}
	for i := range col {
		slices.Sort(col[i])
	}
	t.Logf("passkey sign-in round trip, %d sign-ins: p50 %.2f ms (%.2f–%.2f); begin POST p50 %.2f ms, finish POST p50 %.2f ms; GET gate.css p50 %.2f ms",
		n, col[0][n/2], col[0][0], col[0][n-1], col[1][n/2], col[2][n/2], col[3][n/2])
}
