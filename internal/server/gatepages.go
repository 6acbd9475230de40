package server

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"html/template"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/gaissmai/bart"
	"github.com/valyala/fasthttp"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/engine"
	"github.com/doorman/doorman/internal/gate"
)

// The gate pages, on the gate listener (DOORMAN_GATE_ADDR), which the proxy
// publishes under /_doorman/ on each gated site:
//
//	GET  /_doorman/gate?rd=…               sign in: a passkey button, a TOTP form where allowed
//	POST /_doorman/gate/totp               the TOTP form → 303 to rd with the session cookie
//	POST /_doorman/gate/passkey/begin|finish  the passkey ceremony (JSON, from gate.js)
//	GET  /_doorman/enroll?t=…              uses up an enrollment link: passkey button, TOTP secret and QR
//	POST /_doorman/enroll/passkey/begin|finish, /_doorman/enroll/totp
//	GET|POST /_doorman/signout             a button; the POST clears the cookie
//	GET  /_doorman/gate.js, gate.css       embedded; the pages' only script and style
//
// Every answer forbids framing and caching, and carries a CSP allowing only
// doorman's own script and style. Every request from a denylisted or banned
// address (or from outside the allowlist, unless DOORMAN_GATE_BYPASS_ALLOW)
// is 403 before anything else. Every POST must come from a gated origin
// (Origin) and carry the CSRF cookie's value (form field csrf or header
// X-Doorman-CSRF). rd is followed only to a path on the same site or a
// gated origin; any other rd is refused with 400.
const (
	cookieSession  = "doorman_gate"
	cookieCSRF     = "doorman_gate_csrf"
	cookieLogin    = "doorman_gate_login"
	cookieEnroll   = "doorman_gate_enroll"
	gateCSP        = "default-src 'none'; script-src 'self'; style-src 'self'; img-src data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
	gateCookiePath = "/_doorman/"
)

//go:embed gateweb
var gateWeb embed.FS

// GatePages serves the gate listener. Set the exported fields, then call Init.
type GatePages struct {
	Gate        *gate.Gate
	Service     *engine.Local // the address verdicts
	Header      string        // the client-IP header (DOORMAN_CLIENT_IP_HEADER), read from Trusted peers
	Trusted     *bart.Lite
	Unix        bool
	BypassAllow bool
	Metrics     *GateMetrics // nil: not counted
	Now         func() time.Time
	Log         *slog.Logger

	addr    Decider // the client-address rule of /decide
	origins map[string]bool
	secure  bool
	tmpl    *template.Template
	js, css []byte
}

// Init parses the templates and reads the embedded files.
func (p *GatePages) Init() error {
	var err error
	if p.tmpl, err = template.ParseFS(gateWeb, "gateweb/pages.html"); err != nil {
		return err
	}
	if p.js, err = gateWeb.ReadFile("gateweb/gate.js"); err != nil {
		return err
	}
	if p.css, err = gateWeb.ReadFile("gateweb/gate.css"); err != nil {
		return err
	}
	p.addr = Decider{Header: p.Header, Trusted: p.Trusted, Unix: p.Unix}
	p.origins = map[string]bool{}
	for _, o := range p.Gate.Origins() {
		p.origins[o.Scheme+"://"+o.Host] = true
	}
	// A cookie is Secure unless the gate serves http://localhost (tests).
	p.secure = p.Gate.Origins()[0].Scheme == "https"
	return nil
}

// NewGateServer is the gate listener's server.
func NewGateServer(p *GatePages, log *slog.Logger) *fasthttp.Server {
	return &fasthttp.Server{Handler: p.Handle, ErrorHandler: APIError, Name: "doorman", NoDefaultServerHeader: true,
		DisablePreParseMultipartForm: true, ReadBufferSize: 8 << 10, MaxRequestBodySize: 16 << 10,
		ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second, IdleTimeout: IdleTimeout,
		Concurrency: 4 << 10, Logger: slogPrinter{log}, SecureErrorLogMessage: true}
}

// Handle routes one gate request.
func (p *GatePages) Handle(ctx *fasthttp.RequestCtx) {
	h := &ctx.Response.Header
	h.Set("Content-Security-Policy", gateCSP)
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cache-Control", "no-store")
	// The enrollment link's token is in its URL: no Referer leaves the site.
	// Not no-referrer: under it browsers send Origin: null with a form's
	// POST, which sameOrigin refuses.
	h.Set("Referrer-Policy", "same-origin")
	h.Set("X-Content-Type-Options", "nosniff")
	path := string(ctx.Path())
	switch path {
	case "/_doorman/gate.js":
		ctx.SetContentType("text/javascript; charset=utf-8")
		ctx.SetBody(p.js)
		return
	case "/_doorman/gate.css":
		ctx.SetContentType("text/css; charset=utf-8")
		ctx.SetBody(p.css)
		return
	}
	if !p.addressAllowed(ctx) {
		p.Metrics.refused(true)
		p.page(ctx, fasthttp.StatusForbidden, "message", pageData{Title: "Refused", Message: "Requests from your address are refused."})
		return
	}
	if ctx.IsPost() && !p.sameOrigin(ctx) {
		p.Metrics.refused(false)
		apiError(ctx, fasthttp.StatusForbidden, "cross-site request refused")
		return
	}
	route, ok := p.routes()[string(ctx.Method())+" "+path]
	if !ok {
		p.page(ctx, fasthttp.StatusNotFound, "message", pageData{Title: "Not found", Message: "No such page."})
		return
	}
	route(ctx)
}

func (p *GatePages) routes() map[string]fasthttp.RequestHandler {
	return map[string]fasthttp.RequestHandler{
		"GET /_doorman/gate":                   p.gatePage,
		"POST /_doorman/gate/totp":             p.signInTOTP,
		"POST /_doorman/gate/passkey/begin":    p.loginBegin,
		"POST /_doorman/gate/passkey/finish":   p.loginFinish,
		"GET /_doorman/enroll":                 p.enrollStart,
		"POST /_doorman/enroll":                p.enrollPage,
		"POST /_doorman/enroll/passkey/begin":  p.registerBegin,
		"POST /_doorman/enroll/passkey/finish": p.registerFinish,
		"POST /_doorman/enroll/totp":           p.enrollTOTP,
		"GET /_doorman/signout":                p.signOutPage,
		"POST /_doorman/signout":               p.signOut,
	}
}

// addressAllowed applies the address verdict: no sign-in from a denylisted
// or banned address, or from one without a client address (fail closed).
func (p *GatePages) addressAllowed(ctx *fasthttp.RequestCtx) bool {
	a, _, ok := p.addr.client(ctx)
	if !ok {
		return false
	}
	v := p.Service.Decide(a, p.Now())
	return v.Allow || v.Reason == decide.NotAllowlisted && p.BypassAllow
}

// sameOrigin checks a POST's Origin and its CSRF token against the cookie.
func (p *GatePages) sameOrigin(ctx *fasthttp.RequestCtx) bool {
	if !p.origins[string(ctx.Request.Header.Peek("Origin"))] {
		return false
	}
	want := ctx.Request.Header.Cookie(cookieCSRF)
	got := ctx.Request.Header.Peek("X-Doorman-CSRF")
	if len(got) == 0 {
		got = ctx.PostArgs().Peek("csrf")
	}
	return len(want) >= 16 && subtle.ConstantTimeCompare(want, got) == 1
}

// csrf returns the CSRF cookie's value, setting a new one when missing.
func (p *GatePages) csrf(ctx *fasthttp.RequestCtx) string {
	if v := ctx.Request.Header.Cookie(cookieCSRF); len(v) >= 16 {
		return string(v)
	}
	v := randomToken()
	p.setCookie(ctx, cookieCSRF, v, gateCookiePath, time.Time{}, fasthttp.CookieSameSiteStrictMode)
	return v
}

func randomToken() string {
	var b [18]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// setCookie sets an HttpOnly cookie; expires zero: for the browser session,
// in the past: deleted.
func (p *GatePages) setCookie(ctx *fasthttp.RequestCtx, name, value, path string, expires time.Time, same fasthttp.CookieSameSite) {
	c := fasthttp.AcquireCookie()
	defer fasthttp.ReleaseCookie(c)
	c.SetKey(name)
	c.SetValue(value)
	c.SetPath(path)
	c.SetHTTPOnly(true)
	c.SetSecure(p.secure)
	c.SetSameSite(same)
	if !expires.IsZero() {
		c.SetExpire(expires)
	}
	ctx.Response.Header.SetCookie(c)
}

// setSession sets the doorman_gate cookie: the whole site, SameSite=Lax so
// that a link from elsewhere arrives signed in.
func (p *GatePages) setSession(ctx *fasthttp.RequestCtx, s gate.Session) {
	p.setCookie(ctx, cookieSession, s.Token, "/", s.Expires, fasthttp.CookieSameSiteLaxMode)
	p.Log.Info("gate sign-in", "session", s)
}

// queryRD is the rd of the query string. When the query starts with rd=,
// everything after it is rd: nginx's @doorman_gate writes $request_uri
// there unescaped, query and all. A value that does not start with / is
// unescaped (forward auth's Location, gate.js).
func queryRD(ctx *fasthttp.RequestCtx) string {
	raw, ok := strings.CutPrefix(string(ctx.URI().QueryString()), "rd=")
	if !ok {
		return string(ctx.QueryArgs().Peek("rd"))
	}
	if strings.HasPrefix(raw, "/") {
		return raw
	}
	v, err := url.QueryUnescape(raw)
	if err != nil {
		return "\x00" // refused by rd
	}
	return v
}

// rd returns the request's rd when it is safe to follow: a path on this
// site, or a URL of a gated origin; ok false otherwise. No rd is "/".
func (p *GatePages) rd(raw string) (string, bool) {
	if raw == "" {
		return "/", true
	}
	if strings.ContainsFunc(raw, func(r rune) bool { return r < 0x20 || r == 0x7f || r == '\\' }) {
		return "", false
	}
	if raw[0] == '/' {
		return raw, len(raw) == 1 || raw[1] != '/'
	}
	u, err := url.Parse(raw)
	if err != nil || u.User != nil || !p.origins[u.Scheme+"://"+u.Host] {
		return "", false
	}
	return raw, true
}

// pageData is what the templates read.
type pageData struct {
	Title, Error, CSRF, RD, User, TOTPURI, Message string
	Token                                          string       // the enrollment link's, for enroll-start's form
	QR                                             template.URL // data:image/png;base64,… drawn by doorman
	TOTP, SignOut                                  bool
}

func (p *GatePages) page(ctx *fasthttp.RequestCtx, status int, name string, d pageData) {
	if d.CSRF == "" {
		d.CSRF = p.csrf(ctx)
	}
	var buf bytes.Buffer
	if err := p.tmpl.ExecuteTemplate(&buf, name, d); err != nil {
		p.Log.Error("gate page", "page", name, "err", err)
		ctx.Error("internal error", fasthttp.StatusInternalServerError)
		return
	}
	ctx.SetStatusCode(status)
	ctx.SetContentType("text/html; charset=utf-8")
	ctx.SetBody(buf.Bytes())
}
