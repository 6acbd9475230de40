// Package ui is doorman's status page, /ui/ on the API listener: the active
// bans with a filter, decisions and failures per minute for the last hour
// (SVG drawn on the server), the top banned ranges, the lists' sizes, dry-run
// and cluster status, the event history, the locked accounts, and forms to
// unban, ban, explain and unlock.
// HTML from html/template, embedded; no JavaScript, no external assets.
//
// Security:
//   - With DOORMAN_API_TOKEN set, the page needs a login with the token
//     (POST /ui/login). A login is a random session id in a cookie, signed
//     with a per-process key and looked up server-side (12 h; HttpOnly,
//     SameSite=Strict, Path=/ui/, Secure over TLS). The bearer token alone
//     does not open the page and the cookie does not open /v1/.
//   - Wrong tokens are answered 401 and limited per address and in total,
//     in sliding windows (see limit.go); past a limit a login is 429. The
//     total of wrong tokens from elsewhere never refuses an operator on
//     loopback, the unix socket or in DOORMAN_ALLOW.
//   - Every state-changing form carries the session's CSRF token (field
//     csrf); without it the answer is 403 and nothing changes.
//   - Without a token (loopback only) the page opens directly, with an
//     anonymous session for the CSRF token, and only for a Host that is an
//     IP address or localhost: a page of another site that a DNS name points
//     at 127.0.0.1 (DNS rebinding) is refused.
//   - Answers carry a strict Content-Security-Policy, no-store, and may not
//     be framed.
//
// A UI is safe for concurrent use.
package ui

import (
	"bytes"
	"context"
	"crypto/subtle"
	"embed"
	"errors"
	"html/template"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/valyala/fasthttp"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/api"
	"github.com/doorman/doorman/internal/engine"
	"github.com/doorman/doorman/internal/gate"
	"github.com/doorman/doorman/internal/minutes"
)

//go:embed page.html login.html style.css
var files embed.FS

// Options configure New. Service, Counts and Now are required.
type Options struct {
	Service *engine.Local
	History *engine.History // nil: no events shown
	// Gate lists the gate's credentials (UseGate); nil: not shown.
	Gate *gate.Gate
	// Accounts lists and unlocks locked accounts; nil or disabled: not shown.
	Accounts *engine.Accounts
	// Counts returns the decisions so far by reason and the failures
	// (engine.Metrics.Counts); Run samples it for the charts.
	Counts func() ([decide.NumReasons]uint64, uint64)
	Token  string // DOORMAN_API_TOKEN; empty: no login
	// Operators (DOORMAN_ALLOW), with loopback and the unix socket, sign
	// in while wrong tokens from elsewhere fill the login limit (limit.go).
	Operators []netip.Prefix
	Version   string
	DryRun    bool
	// RedisUp reports whether Redis is reachable; nil: not in cluster mode.
	RedisUp func() bool
	// LastSync is when the cluster last resynced with Redis in full.
	LastSync func() time.Time
	// Feeds are the deny feeds' states; nil: none configured.
	Feeds func() []Feed
	// Locate says where an address is; nil: no address database.
	Locate func(netip.Addr) Place
	Log    *slog.Logger
	Now    func() time.Time
}

// Feed is one deny feed as the page shows it.
type Feed struct {
	Name, URL string
	Prefixes  int       // in force
	Skipped   int       // entries left out: too wide, private, malformed, over the limit
	Verified  time.Time // when its source last confirmed the copy in force; zero: no copy yet
	Error     string    // the last fetch's error; empty when it succeeded
}

// Place is what the address databases say of an address; empty fields are
// unknown.
type Place struct{ Country, ASN, Org, Network string }

// UI is the status page handler.
type UI struct {
	o        Options
	sessions *sessions
	limit    *limiter
	sample   *sampler
	ring     *minutes.Ring
	page     *template.Template
	login    *template.Template
	css      []byte
}

// New returns the page; call Run to feed its charts.
func New(o Options) (*UI, error) {
	if o.Service == nil || o.Counts == nil || o.Now == nil {
		return nil, errors.New("ui: Service, Counts and Now are required")
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	// v shows a string a person or Redis chose (a note, a username) with
	// its control and format characters escaped (api.Visible):
	// html/template escapes markup, not a bidi override or a newline.
	funcs := template.FuncMap{"v": api.Visible, "in": untilWords, "time": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") }}
	page, err := template.New("page.html").Funcs(funcs).ParseFS(files, "page.html")
	if err != nil {
		return nil, err
	}
	login, err := template.ParseFS(files, "login.html")
	if err != nil {
		return nil, err
	}
	css, _ := files.ReadFile("style.css")
	ring := minutes.New(numSeries)
	return &UI{o: o, sessions: newSessions(), limit: newLimiter(), ring: ring,
		sample: &sampler{counts: o.Counts, ring: ring}, page: page, login: login, css: css}, nil
}

// Run samples the counters once a second until ctx ends.
func (u *UI) Run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		u.sample.sample(u.o.Now())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

const cookieName = "doorman_session"

// Handle answers every request under /ui/.
func (u *UI) Handle(ctx *fasthttp.RequestCtx) {
	h := &ctx.Response.Header
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	if u.o.Token == "" && !localHost(string(ctx.Host())) {
		u.text(ctx, fasthttp.StatusForbidden, "Without DOORMAN_API_TOKEN the status page answers only to http://127.0.0.1 or http://localhost.")
		return
	}
	path := string(ctx.Path())
	switch path {
	case "/ui":
		redirect(ctx)
	case "/ui/style.css":
		if u.method(ctx, "GET", "HEAD") {
			ctx.SetContentType("text/css; charset=utf-8")
			ctx.SetBody(u.css)
		}
	case "/ui/login":
		if u.method(ctx, "POST") {
			u.doLogin(ctx)
		}
	case "/ui/":
		if u.method(ctx, "GET", "HEAD") {
			u.show(ctx)
		}
	case "/ui/logout", "/ui/unban", "/ui/ban", "/ui/unlock", "/ui/gate/revoke", "/ui/gate/enroll":
		if !u.method(ctx, "POST") {
			return
		}
		id, ses, ok := u.session(ctx)
		if !ok || !checkCSRF(ses, string(ctx.PostArgs().Peek("csrf"))) {
			u.text(ctx, fasthttp.StatusForbidden, "Missing or wrong CSRF token: reload the page and try again.")
			return
		}
		switch path {
		case "/ui/logout":
			u.sessions.end(id)
			u.setCookie(ctx, "", -1)
		case "/ui/unban":
			u.sessions.setFlash(id, u.unban(ctx))
		case "/ui/ban":
			u.sessions.setFlash(id, u.ban(ctx))
		case "/ui/unlock":
			u.sessions.setFlash(id, u.unlock(ctx))
		case "/ui/gate/revoke":
			u.sessions.setFlash(id, u.gateRevoke(ctx))
		case "/ui/gate/enroll":
			u.sessions.setFlash(id, u.gateEnroll(ctx))
		}
		redirect(ctx)
	default:
		u.text(ctx, fasthttp.StatusNotFound, "No such page.")
	}
}

// localHost accepts a Host header naming an IP address or localhost.
func localHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	_, err := netip.ParseAddr(host)
	return err == nil || strings.EqualFold(host, "localhost")
}

func redirect(ctx *fasthttp.RequestCtx) {
	ctx.Response.Header.Set("Location", "/ui/")
	ctx.SetStatusCode(fasthttp.StatusSeeOther)
}

func (u *UI) method(ctx *fasthttp.RequestCtx, allowed ...string) bool {
	if slices.Contains(allowed, string(ctx.Method())) {
		return true
	}
	ctx.Response.Header.Set("Allow", strings.Join(allowed, ", "))
	u.text(ctx, fasthttp.StatusMethodNotAllowed, "Method not allowed.")
	return false
}

func (u *UI) text(ctx *fasthttp.RequestCtx, status int, msg string) {
	ctx.SetStatusCode(status)
	ctx.SetContentType("text/plain; charset=utf-8")
	ctx.SetBodyString(msg + "\n")
}

// session returns the request's session. Without a token configured, a
// request without one gets a new anonymous session (a cookie is set).
func (u *UI) session(ctx *fasthttp.RequestCtx) (string, session, bool) {
	now := u.o.Now()
	if id, ses, ok := u.sessions.lookup(string(ctx.Request.Header.Cookie(cookieName)), now); ok {
		return id, ses, true
	}
	if u.o.Token != "" || !ctx.IsGet() {
		return "", session{}, false
	}
	cookie := u.sessions.create(now)
	u.setCookie(ctx, cookie, SessionTTL)
	return u.sessions.lookup(cookie, now)
}

func (u *UI) setCookie(ctx *fasthttp.RequestCtx, value string, ttl time.Duration) {
	c := fasthttp.AcquireCookie()
	defer fasthttp.ReleaseCookie(c)
	c.SetKey(cookieName)
	c.SetValue(value)
	c.SetPath("/ui/")
	c.SetHTTPOnly(true)
	c.SetSameSite(fasthttp.CookieSameSiteStrictMode)
	// Behind a TLS-terminating proxy the request says so; a client that
	// claims https without it only keeps its own cookie off plain HTTP.
	c.SetSecure(ctx.IsTLS() || string(ctx.Request.Header.Peek("X-Forwarded-Proto")) == "https")
	if ttl < 0 {
		c.SetMaxAge(-1)
	} else {
		c.SetMaxAge(int(ttl / time.Second))
	}
	ctx.Response.Header.SetCookie(c)
}

func peer(ctx *fasthttp.RequestCtx) netip.Addr {
	if t, ok := ctx.RemoteAddr().(*net.TCPAddr); ok {
		a, _ := netip.AddrFromSlice(t.IP)
		return a.Unmap()
	}
	return netip.Addr{} // a unix socket: every peer shares one budget
}

func (u *UI) doLogin(ctx *fasthttp.RequestCtx) {
	if u.o.Token == "" {
		redirect(ctx)
		return
	}
	now, from := u.o.Now(), peer(ctx)
	op := operator(from, u.o.Operators)
	if ok, wait := u.limit.allowed(from, op, now); !ok {
		ctx.Response.Header.Set("Retry-After", strconv.Itoa(int(wait/time.Second)+1))
		u.renderLogin(ctx, fasthttp.StatusTooManyRequests, "Too many wrong tokens. Try again "+untilWords(now.Add(wait), now)+".")
		return
	}
	got := ctx.PostArgs().Peek("token")
	if subtle.ConstantTimeCompare(got, []byte(u.o.Token)) != 1 {
		u.limit.failed(from, op, now)
		u.o.Log.Warn("ui login refused: wrong token", "peer", from.String())
		u.renderLogin(ctx, fasthttp.StatusUnauthorized, "Wrong token.")
		return
	}
	u.setCookie(ctx, u.sessions.create(now), SessionTTL)
	u.o.Log.Info("ui login", "peer", from.String())
	redirect(ctx)
}

func (u *UI) renderLogin(ctx *fasthttp.RequestCtx, status int, msg string) {
	var b bytes.Buffer
	if err := u.login.Execute(&b, map[string]string{"Error": msg, "Version": u.o.Version}); err != nil {
		u.text(ctx, fasthttp.StatusInternalServerError, "template: "+err.Error())
		return
	}
	ctx.SetStatusCode(status)
	ctx.SetContentType("text/html; charset=utf-8")
	ctx.SetBody(b.Bytes())
}

// callCtx bounds the service calls of one action (Redis in cluster mode).
func callCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 5*time.Second)
}

// unban lifts the bans covering an address, or exactly a ban's CIDR key
// (api.ParseUnban), and returns the message for the page.
func (u *UI) unban(ctx *fasthttp.RequestCtx) string {
	arg := string(ctx.PostArgs().Peek("ip"))
	target, err := api.ParseUnban(arg)
	if err != nil {
		return "Not unbanned: " + err.Error() + "."
	}
	c, cancel := callCtx()
	defer cancel()
	now := u.o.Now()
	lifted, err := u.o.Service.Lift(c, target.Addr, target.Prefix, now)
	active := lifted.Active(now)
	u.o.Log.Info("ui unban", "ip", cut(arg), "lifted", len(active), "peer", peer(ctx).String())
	var keys []string
	for _, b := range active {
		keys = append(keys, b.Key.String())
	}
	switch {
	case err != nil && len(keys) > 0:
		return "Unbanned " + strings.Join(keys, ", ") + " in memory, but: " + err.Error()
	case err != nil:
		return "Not unbanned: " + err.Error()
	case len(keys) == 0:
		return "No ban covers " + trunc(strings.TrimSpace(arg)) + "."
	}
	return "Unbanned " + strings.Join(keys, ", ") + "."
}

// ban makes a manual ban (api.ParseBan) and returns the message for the page.
func (u *UI) ban(ctx *fasthttp.RequestCtx) string {
	args := ctx.PostArgs()
	arg := string(args.Peek("ip"))
	want, err := api.ParseBan(arg, string(args.Peek("duration")), string(args.Peek("note")))
	if err != nil {
		return "Not banned: " + problem(err) + "."
	}
	c, cancel := callCtx()
	defer cancel()
	now := u.o.Now()
	b, err := u.o.Service.Ban(c, want.Prefix, want.Duration, want.Note, now)
	u.o.Log.Info("ui ban", "ip", cut(arg), "duration", want.Duration.String(), "peer", peer(ctx).String(), "ok", err == nil)
	switch {
	case errors.Is(err, engine.ErrNotSaved):
		return "Banned " + b.Key.String() + ", but: " + err.Error()
	case err != nil:
		return "Not banned: " + err.Error()
	}
	return "Banned " + b.Key.String() + " until " + b.Until.UTC().Format("2006-01-02 15:04 UTC") + " (" + untilWords(b.Until, now) + ")."
}

// problem is an input error without the API's field name; the form says
// which field is which.
func problem(err error) string {
	var fe *api.FieldError
	if errors.As(err, &fe) {
		if fe.Field == "reason" {
			return "the note is " + fe.Err.Error()
		}
		return fe.Err.Error()
	}
	return err.Error()
}

// unlock lifts an account's lock and forgets its failures; the name is
// normalised as the API normalises it (api.Username).
func (u *UI) unlock(ctx *fasthttp.RequestCtx) string {
	raw := string(ctx.PostArgs().Peek("user"))
	if !u.accountsOn() {
		return "Accounts are not enabled."
	}
	user, err := api.Username(raw)
	if err != nil {
		return "Not unlocked: " + err.Error() + "."
	}
	if user == "" {
		return "Not unlocked: no username."
	}
	c, cancel := callCtx()
	defer cancel()
	r, err := u.o.Accounts.Unlock(c, user, u.o.Now())
	u.o.Log.Info("ui unlock", "user", user, "ok", r.Found, "peer", peer(ctx).String())
	switch {
	case err != nil:
		return "Unlocked, but: " + err.Error()
	case !r.Found:
		return "No account " + api.Visible(user) + " is tracked."
	case r.Failed():
		return "Unlocked " + api.Visible(r.Lock.Username) + " here; other doormen learn it when Redis is reachable again."
	}
	return "Unlocked " + api.Visible(r.Lock.Username) + "."
}

func (u *UI) accountsOn() bool { return u.o.Accounts != nil && u.o.Accounts.Enabled() }

// trunc shortens what a form sent for a message on the page, escaped
// (api.Visible).
func trunc(s string) string { return api.Visible(cut(s)) }

// cut shortens what a form sent to 64 bytes, on a rune boundary, for a log
// line (the handler escapes it) or a %q.
func cut(s string) string {
	if len(s) <= 64 {
		return s
	}
	n := 64
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// untilWords says when t comes, from now, rounding up: "in 59 minutes".
func untilWords(t, now time.Time) string {
	s := int64((t.Sub(now) + time.Second - 1) / time.Second)
	ceil := func(n, unit int64) int64 { return (n + unit - 1) / unit }
	plural := func(n int64, unit string) string {
		if n == 1 {
			return "1 " + unit
		}
		return strconv.FormatInt(n, 10) + " " + unit + "s"
	}
	switch {
	case s <= 0:
		return "now"
	case s < 60:
		return "in " + plural(s, "second")
	case s <= 2*3600:
		switch m := ceil(s, 60); {
		case m < 60:
			return "in " + plural(m, "minute")
		case m%60 == 0:
			return "in " + plural(m/60, "hour")
		default:
			return "in 1 hour and " + plural(m%60, "minute")
		}
	case s < 48*3600:
		return "in " + plural(ceil(s, 3600), "hour")
	}
	return "in " + plural(ceil(s, 86400), "day")
}
