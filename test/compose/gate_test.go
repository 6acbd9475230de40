package compose

import (
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
)

var (
	enrollLinkRe = regexp.MustCompile(`http://localhost:\d+/_doorman/enroll\?t=\S+`)
	otpauthRe    = regexp.MustCompile(`<code>(otpauth://[^<]+)</code>`)
	csrfRe       = regexp.MustCompile(`data-csrf="([^"]+)"`)
)

// gateSignIn enrolls alice through the stack's gate as a person would: an
// enrollment link from `doorman gate enroll` inside the container, opened
// through nginx, the TOTP secret of the page confirmed with a code. It
// returns the client holding the session (its cookie jar).
func gateSignIn(t *testing.T, inside func(string, ...string) string, origin string) *http.Client {
	t.Helper()
	out := inside("doorman", "/doorman", "gate", "enroll", "alice")
	link := enrollLinkRe.FindString(out)
	if link == "" || !strings.HasPrefix(link, origin) {
		t.Fatalf("doorman gate enroll alice: %s, want a link on %s", out, origin)
	}
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Timeout: 10 * time.Second, Jar: jar, Transport: &http.Transport{Proxy: nil}}
	start := get(t, c, link) // does not use the link up: a link preview may fetch it
	csrf := csrfRe.FindStringSubmatch(start.body)
	if start.status != 200 || csrf == nil {
		t.Fatalf("enrollment link: %d %.300q", start.status, start.body)
	}
	page := post(t, c, origin, "/_doorman/enroll", url.Values{"csrf": {csrf[1]}, "t": {strings.TrimPrefix(link, origin+"/_doorman/enroll?t=")}})
	m := otpauthRe.FindStringSubmatch(page.body)
	if page.status != 200 || m == nil {
		t.Fatalf("enrollment page: %d %.300q", page.status, page.body)
	}
	other := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil}}
	if again := get(t, other, link); again.status != http.StatusNotFound {
		t.Errorf("the enrollment link after use: %d, want 404", again.status)
	}
	key, err := otp.NewKeyFromURL(html.UnescapeString(m[1]))
	if err != nil {
		t.Fatal(err)
	}
	code, err := totp.GenerateCode(key.Secret(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if r := post(t, c, origin, "/_doorman/enroll/totp", url.Values{"csrf": {csrf[1]}, "code": {code}}); r.status != 200 || !strings.Contains(r.body, "signed in") {
		t.Fatalf("confirming the TOTP secret: %d %.300q", r.status, r.body)
	}
	return c
}

// post sends form to origin+path from c, as the gate's pages do (Origin set).
func post(t *testing.T, c *http.Client, origin, path string, form url.Values) response {
	t.Helper()
	req, _ := http.NewRequest("POST", origin+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", origin)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{resp.StatusCode, string(b), resp.Header.Get("Retry-After")}
}

// noRedirects answers the first response, a redirect included.
func noRedirects() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}
