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
	page := get(t, c, link)
	m := otpauthRe.FindStringSubmatch(page.body)
	csrf := csrfRe.FindStringSubmatch(page.body)
	if page.status != 200 || m == nil || csrf == nil {
		t.Fatalf("enrollment page: %d %.300q", page.status, page.body)
	}
	other := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil}}
	if again := get(t, other, link); again.status != http.StatusNotFound {
		t.Errorf("the enrollment link opened twice: %d, want 404", again.status)
	}
	key, err := otp.NewKeyFromURL(html.UnescapeString(m[1]))
	if err != nil {
		t.Fatal(err)
	}
	code, err := totp.GenerateCode(key.Secret(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	form := url.Values{"csrf": {csrf[1]}, "code": {code}}
	req, _ := http.NewRequest("POST", origin+"/_doorman/enroll/totp", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", origin)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "signed in") {
		t.Fatalf("confirming the TOTP secret: %d %.300q", resp.StatusCode, b)
	}
	return c
}

// noRedirects answers the first response, a redirect included.
func noRedirects() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}
