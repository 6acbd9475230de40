package test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// The status page in a real browser: headless Chromium driven through the
// DevTools protocol, with JavaScript off for the page (it must work
// without). DOORMAN_UPDATE_SCREENSHOT=1 also writes docs/status-page.png.

const uiToken = "ui-test-token"

// chromium starts headless Chromium and returns a tab's context.
func chromium(t *testing.T) context.Context {
	t.Helper()
	requireTool(t, "chromium", "chromium")
	bin, _ := lookTool("chromium")
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin),
		chromedp.NoSandbox, // root in CI; the page is our own, on loopback
		chromedp.DisableGPU,
		chromedp.WindowSize(1100, 900),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("no-proxy-server", true),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(alloc, chromedp.WithErrorf(t.Logf))
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(func() { cancelTimeout(); cancelCtx(); cancelAlloc() })
	if _, err := chromedp.Call(ctx, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true}); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx
}

func TestStatusPageBrowser(t *testing.T) {
	d := startDoorman(t, map[string]string{"DOORMAN_API_TOKEN": uiToken, "DOORMAN_MAX_FAILURES": "3"})
	ctx := chromium(t)
	base := "http://" + d.APIAddr + "/ui/"
	const victim = "192.0.2.44"

	// Sign in with the token through the form.
	err := chromedp.Do(ctx,
		chromedp.Navigate(base),
		chromedp.WaitVisible(chromedp.CSS(`#token`)),
		chromedp.SendKeys(chromedp.CSS(`#token`), "wrong"),
		chromedp.Submit(chromedp.CSS(`#token`)),
		chromedp.WaitVisible(chromedp.CSS(`.error`)),
	)
	text, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`.error`)))
	if err != nil || !strings.Contains(text, "Wrong token") {
		t.Fatalf("wrong token: %v, page says %q", err, text)
	}
	err = chromedp.Do(ctx,
		chromedp.SetValue(chromedp.CSS(`#token`), uiToken),
		chromedp.Submit(chromedp.CSS(`#token`)),
		chromedp.WaitVisible(`//h2[text()="Decisions per minute"]`),
	)
	if err != nil {
		t.Fatalf("login: %v", err)
	}

	// The session cookie: HttpOnly, SameSite=Strict, Path=/ui/, not the token.
	res, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{base}})
	if err != nil {
		t.Fatal(err)
	}
	cookies := res.Cookies
	if len(cookies) != 1 || !cookies[0].HTTPOnly || cookies[0].SameSite != network.CookieSameSiteStrict ||
		cookies[0].Path != "/ui/" || strings.Contains(cookies[0].Value, uiToken) {
		t.Fatalf("cookies %+v, want one HttpOnly SameSite=Strict Path=/ui/ session", cookies)
	}
	session := cookies[0].Name + "=" + cookies[0].Value

	// The page's session does not open /v1/; the bearer token alone does not
	// open the page.
	req, _ := http.NewRequest("GET", "http://"+d.APIAddr+"/v1/bans", nil)
	req.Header.Set("Cookie", session)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 401 {
		t.Errorf("/v1/bans with the page's cookie: %v %v, want 401", resp.Status, err)
	}
	req, _ = http.NewRequest("GET", base, nil)
	req.Header.Set("Authorization", "Bearer "+uiToken)
	if resp, err := http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	} else if b, _ := io.ReadAll(resp.Body); strings.Contains(string(b), "Decisions per minute") {
		t.Errorf("the bearer token alone opened the page")
	}

	// A ban made through the webhook shows on the page.
	for range 3 {
		if code, body := d.API(t, "POST", "/v1/failures", map[string]string{"ip": victim, "username": "admin"}); code != 200 {
			t.Fatalf("failure: %d %s", code, body)
		}
	}
	dc := newDecider(t, d.DecideAddr)
	if got := dc.reason(t, victim); got != "banned" {
		t.Fatalf("decision for %s after the failures: %q, want banned", victim, got)
	}
	// Traffic for the chart, and other bans for the lists.
	for i := range 40 {
		dc.reason(t, fmt.Sprintf("198.51.100.%d", i%8))
		dc.reason(t, victim)
	}
	for _, b := range []map[string]string{
		{"ip": "203.0.113.0/24", "duration": "6h", "reason": "scanner range"},
		{"ip": "203.0.113.77", "duration": "2h", "reason": "credential stuffing"},
		{"ip": "2001:db8:7::1", "duration": "45m"},
	} {
		if code, body := d.API(t, "POST", "/v1/bans", b); code != 201 {
			t.Fatalf("ban %v: %d %s", b, code, body)
		}
	}
	key := victim + "/32"
	row := fmt.Sprintf(`//input[@name="ip" and @value=%q]`, key)
	rows := func() int {
		t.Helper()
		n, err := chromedp.Run(ctx, chromedp.Evaluate[int](fmt.Sprintf(
			`document.evaluate(%q, document, null, XPathResult.ORDERED_NODE_SNAPSHOT_TYPE, null).snapshotLength`, row)))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	// The page draws the chart from a sample taken once a second.
	for deadline := time.Now().Add(10 * time.Second); ; {
		if err := chromedp.Do(ctx, chromedp.Navigate(base), chromedp.WaitVisible(chromedp.ID("bans"))); err != nil {
			t.Fatal(err)
		}
		bars, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('figure > svg > rect').length`))
		if err != nil {
			t.Fatal(err)
		}
		if bars > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no chart bars within 10 s")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if n := rows(); n != 1 {
		t.Fatalf("ban rows for %s: %d, want 1", key, n)
	}

	if os.Getenv("DOORMAN_UPDATE_SCREENSHOT") == "1" {
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(repoRoot(t), "docs", "status-page.png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// Unban it from the page: the row's button.
	err = chromedp.Do(ctx,
		chromedp.Click(row+`/following-sibling::button`),
		chromedp.WaitVisible(chromedp.CSS(`.flash`)),
	)
	if err != nil {
		t.Fatalf("unban from the page: %v", err)
	}
	flash, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`.flash`)))
	if n := rows(); flash != "Unbanned "+key+"." || n != 0 {
		t.Errorf("after unban: message %q, %d rows for %s; want the message and no row", flash, n, key)
	}
	if got := dc.reason(t, victim); got != "allowed" {
		t.Errorf("decision for %s after the unban from the page: %q, want allowed", victim, got)
	}

	// Explain, through the GET form.
	err = chromedp.Do(ctx, chromedp.Navigate(base+"?ip="+url.QueryEscape("203.0.113.9")))
	explained, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`.explain`)))
	if err != nil || !strings.Contains(explained, "203.0.113.9 is denied (banned): banned as 203.0.113.0/24") {
		t.Errorf("explain: %v, page says %q", err, explained)
	}
	if log := d.Log(t); !strings.Contains(log, `msg="ui unban" ip=`+key) || !strings.Contains(log, "msg=unban ip="+victim) {
		t.Errorf("the unban from the page is not logged:\n%s", tail(log, 20))
	}
}

// A state-changing request without the page's CSRF token changes nothing,
// and events survive a restart (GET /v1/events, newest first).
func TestStatusPageCSRFAndEvents(t *testing.T) {
	d := startDoorman(t, map[string]string{"DOORMAN_API_TOKEN": uiToken, "DOORMAN_MAX_EVENTS": "3"})
	for _, ip := range []string{"192.0.2.1", "192.0.2.2", "198.51.100.0/24", "192.0.2.3"} {
		if code, body := d.API(t, "POST", "/v1/bans", map[string]string{"ip": ip, "duration": "1h"}); code != 201 {
			t.Fatalf("ban %s: %d %s", ip, code, body)
		}
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.PostForm("http://"+d.APIAddr+"/ui/login", url.Values{"token": {uiToken}})
	if err != nil || resp.StatusCode != 303 {
		t.Fatalf("login: %v %v", resp.Status, err)
	}
	cookie := resp.Cookies()[0]
	post := func(path string, form url.Values) int {
		req, _ := http.NewRequest("POST", "http://"+d.APIAddr+path, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.AddCookie(cookie)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post("/ui/unban", url.Values{"ip": {"192.0.2.1"}}); code != 403 {
		t.Errorf("unban without csrf: %d, want 403", code)
	}
	if code := post("/ui/unban", url.Values{"ip": {"192.0.2.1"}, "csrf": {"forged"}}); code != 403 {
		t.Errorf("unban with a forged csrf: %d, want 403", code)
	}
	if got := newDecider(t, d.DecideAddr).reason(t, "192.0.2.1"); got != "banned" {
		t.Errorf("after refused unbans: decision %q, want banned", got)
	}

	d.Restart(t)
	code, body := d.API(t, "GET", "/v1/events?limit=10", nil)
	want := `"type":"ban","key":"192.0.2.3/32"`
	if code != 200 || strings.Count(string(body), `"type"`) != 3 || !strings.Contains(string(body), want) ||
		strings.Index(string(body), want) > strings.Index(string(body), `"range_ban"`) {
		t.Errorf("events after restart: %d %s; want the last 3, newest (%s) first", code, body, want)
	}
}
