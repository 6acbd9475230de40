package server

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/engine"
	"github.com/doorman/doorman/internal/gate"
)

// MaxBody is the largest request body the API reads.
const MaxBody = 4 << 10

// MaxManualBan is the longest manual ban (engine.MaxManualBan).
const MaxManualBan = engine.MaxManualBan

// apiTimeout bounds the service calls of one API request (Redis round trips
// in cluster mode).
const apiTimeout = 5 * time.Second

// API is the JSON API handler.
type API struct {
	Service engine.Service
	Token   string // empty: no token required
	Now     func() time.Time
	Metrics *engine.Metrics // served on /metrics
	Log     *slog.Logger
	Events  *engine.History         // GET /v1/events; nil: none kept
	UI      fasthttp.RequestHandler // /ui/, the status page, with its own login; nil: 404
	// Accounts serves /v1/attempts and /v1/accounts and the account side of
	// failures and successes; nil: accounts off. DryRun: /v1/attempts allows.
	Accounts engine.AccountService
	DryRun   bool
	// Gate serves /v1/gate/… (gate_api.go); nil: the gate is off.
	Gate *gate.Gate

	// failLog writes the failure lines: at most
	// engine.FailureLinesPerSecond a second at info, the rest at debug,
	// summed up at info every engine.FailureSummaryEvery.
	failLog engine.FailureLog
}

type failureIn struct {
	IP       string `json:"ip"`
	Username string `json:"username"`
	Device   string `json:"device"` // the client's device token, if any
}

type failureOut struct {
	IP       string       `json:"ip"`
	Key      string       `json:"key"`
	Failures int          `json:"failures"`
	Banned   bool         `json:"banned"`
	Until    string       `json:"until,omitempty"`
	NeverBan bool         `json:"never_ban,omitempty"`
	Account  *AccountJSON `json:"account,omitempty"`
}

type banIn struct {
	IP       string `json:"ip"`
	Duration string `json:"duration"`
	Reason   string `json:"reason"`
}

// BanJSON is a ban as the API shows it.
type BanJSON struct {
	Key    string `json:"key"`
	Until  string `json:"until"`
	Reason string `json:"reason"`
	Count  int    `json:"count"`
	Note   string `json:"note,omitempty"`
}

// DecideJSON explains a decision.
type DecideJSON struct {
	IP       string `json:"ip"`
	Verdict  string `json:"verdict"`
	Reason   string `json:"reason"`
	Key      string `json:"key,omitempty"`
	Until    string `json:"until,omitempty"`
	Failures int    `json:"failures"`
}

func banJSON(b decide.Ban) BanJSON {
	return BanJSON{Key: b.Key.String(), Until: b.Until.Format(time.RFC3339), Reason: b.Reason(), Count: b.Count, Note: b.Note}
}

// Handle routes one API request.
func (a *API) Handle(ctx *fasthttp.RequestCtx) {
	path := string(ctx.Path())
	switch {
	case path == "/healthz":
		if !a.method(ctx, "GET", "HEAD") {
			return
		}
		writeJSON(ctx, fasthttp.StatusOK, map[string]string{"status": "ok"})
		return
	case path == "/metrics":
		if !a.method(ctx, "GET") {
			return
		}
		ctx.SetContentType("text/plain; version=0.0.4")
		a.Metrics.Write(ctx)
		return
	case a.UI != nil && (path == "/ui" || strings.HasPrefix(path, "/ui/")):
		a.UI(ctx) // its own session, never the bearer token
		return
	case !strings.HasPrefix(path, "/v1/"):
		apiError(ctx, fasthttp.StatusNotFound, "no such endpoint: %s", path)
		return
	}
	if fromBrowser(ctx) {
		// A page on any site can make the browser of someone on this host
		// POST a text/plain form to a loopback API without a token. API
		// clients (the app, the CLI, curl) send no Origin; browsers always
		// do on a cross-site POST and mark fetches with Sec-Fetch-Site.
		apiError(ctx, fasthttp.StatusForbidden, "requests from a browser page are refused on /v1/; use the status page at /ui/")
		return
	}
	if !a.authorized(ctx) {
		ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="doorman"`)
		apiError(ctx, fasthttp.StatusUnauthorized, "missing or wrong bearer token")
		return
	}
	c, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	c = engine.WithProxiesReport(c) // cached mode: were nginx's caches refreshed?
	switch {
	case path == "/v1/failures":
		if a.method(ctx, "POST") {
			a.failure(c, ctx)
		}
	case path == "/v1/successes":
		if a.method(ctx, "POST") {
			a.success(c, ctx)
		}
	case path == "/v1/bans":
		if !a.method(ctx, "GET", "POST") {
			return
		}
		if ctx.IsGet() {
			a.listBans(ctx)
		} else {
			a.ban(c, ctx)
		}
	case strings.HasPrefix(path, "/v1/bans/"):
		if a.method(ctx, "DELETE") {
			a.unban(c, ctx, strings.TrimPrefix(path, "/v1/bans/"))
		}
	case path == "/v1/decide":
		if a.method(ctx, "GET") {
			a.explain(c, ctx)
		}
	case path == "/v1/attempts" || path == "/v1/accounts" || strings.HasPrefix(path, "/v1/accounts/"):
		a.handleAccounts(c, ctx, path)
	case strings.HasPrefix(path, "/v1/gate/"):
		a.handleGate(ctx, path)
	case path == "/v1/events":
		if a.method(ctx, "GET") {
			a.events(ctx)
		}
	default:
		apiError(ctx, fasthttp.StatusNotFound, "no such endpoint: %s", path)
	}
}

// fromBrowser reports whether a request was sent by a web page: it carries
// an Origin, or a Sec-Fetch-Site other than "none" (typed by the user).
func fromBrowser(ctx *fasthttp.RequestCtx) bool {
	h := &ctx.Request.Header
	if len(h.Peek("Origin")) > 0 {
		return true
	}
	site := h.Peek("Sec-Fetch-Site")
	return len(site) > 0 && string(site) != "none"
}

func (a *API) authorized(ctx *fasthttp.RequestCtx) bool {
	if a.Token == "" {
		return true
	}
	got, ok := bytes.CutPrefix(ctx.Request.Header.Peek("Authorization"), []byte("Bearer "))
	return ok && subtle.ConstantTimeCompare(got, []byte(a.Token)) == 1
}

func (a *API) method(ctx *fasthttp.RequestCtx, allowed ...string) bool {
	m := string(ctx.Method())
	for _, x := range allowed {
		if m == x {
			return true
		}
	}
	ctx.Response.Header.Set("Allow", strings.Join(allowed, ", "))
	apiError(ctx, fasthttp.StatusMethodNotAllowed, "method %s not allowed; use %s", m, strings.Join(allowed, " or "))
	return false
}

// readAddr decodes a {"ip":…,"username":…} body, parses its address and
// normalises its username (in.Username; "" when none was given).
func readAddr(ctx *fasthttp.RequestCtx) (failureIn, netip.Addr, bool) {
	var in failureIn
	if !readJSON(ctx, &in) {
		return in, netip.Addr{}, false
	}
	ip, ok := parseIP(ctx, in.IP)
	if !ok {
		return in, ip, false
	}
	in.Username, ok = accountName(ctx, in.Username)
	return in, ip, ok
}

func (a *API) failure(c context.Context, ctx *fasthttp.RequestCtx) {
	in, ip, ok := readAddr(ctx)
	if !ok {
		return
	}
	user := in.Username
	now := a.Now()
	res, err := a.Service.Fail(c, ip, now)
	if err != nil && !res.Banned {
		a.serviceError(ctx, err)
		return
	}
	a.failLog.Log(a.Log, now, res.Key, "ip", res.Addr.String(), "key", res.Key.String(), "username", user, "failures", res.Failures)
	if err != nil {
		a.serviceError(ctx, err) // the ban holds in memory; say it was not saved
		return
	}
	out := failureOut{IP: res.Addr.String(), Key: res.Key.String(), Failures: res.Failures, NeverBan: res.NeverBan}
	if res.InForce() {
		out.Banned, out.Until = true, res.Ban.Until.Format(time.RFC3339)
	}
	if out.Account, err = a.accountFailure(c, user, in.Device, now); err != nil {
		a.serviceError(ctx, err) // the lock holds in memory; say it was not saved
		return
	}
	writeJSON(ctx, fasthttp.StatusOK, withProxies(c, out))
}

func (a *API) success(c context.Context, ctx *fasthttp.RequestCtx) {
	in, ip, ok := readAddr(ctx)
	if !ok {
		return
	}
	user := in.Username
	now := a.Now()
	ip, key, err := a.Service.Succeed(c, ip, now)
	if err != nil {
		a.serviceError(ctx, err)
		return
	}
	out := map[string]any{"ip": ip.String(), "key": key.String(), "failures": 0}
	if err := a.deviceToken(c, out, user, in.Device, now); err != nil {
		a.serviceError(ctx, err)
		return
	}
	writeJSON(ctx, fasthttp.StatusOK, out)
}

func (a *API) listBans(ctx *fasthttp.RequestCtx) {
	bans := a.Service.Bans(a.Now())
	out := make([]BanJSON, len(bans))
	for i, b := range bans {
		out[i] = banJSON(b)
	}
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{"bans": out})
}

func (a *API) ban(c context.Context, ctx *fasthttp.RequestCtx) {
	var in banIn
	if !readJSON(ctx, &in) {
		return
	}
	p, err := decide.ParsePrefix(strings.TrimSpace(in.IP))
	if in.IP == "" {
		apiError(ctx, fasthttp.StatusBadRequest, `missing "ip": an IP or CIDR`)
		return
	} else if err != nil {
		apiError(ctx, fasthttp.StatusBadRequest, `"ip": %v`, err)
		return
	}
	var d time.Duration
	if in.Duration != "" {
		// Under 1s is refused: such a ban would be answered 201 and be over
		// before the next request.
		if d, err = time.ParseDuration(in.Duration); err != nil || d < time.Second || d > MaxManualBan {
			apiError(ctx, fasthttp.StatusBadRequest, `"duration": %q is not a duration from 1s to %v (e.g. 90s, 1h)`, in.Duration, MaxManualBan)
			return
		}
	}
	if len(in.Reason) > 256 {
		apiError(ctx, fasthttp.StatusBadRequest, `"reason": longer than 256 bytes`)
		return
	}
	b, err := a.Service.Ban(c, p, d, in.Reason, a.Now())
	if errors.Is(err, decide.ErrTableFull) {
		apiError(ctx, fasthttp.StatusConflict, "%v (DOORMAN_MAX_BANS)", err)
		return
	} else if errors.Is(err, decide.ErrTooWide) {
		apiError(ctx, fasthttp.StatusBadRequest, `"ip": %q: %v`, in.IP, err)
		return
	} else if err != nil {
		a.serviceError(ctx, err)
		return
	}
	writeJSON(ctx, fasthttp.StatusCreated, withProxies(c, banJSON(b)))
}

func (a *API) unban(c context.Context, ctx *fasthttp.RequestCtx, arg string) {
	now := a.Now()
	var lifted []decide.Ban
	var err error
	if strings.Contains(arg, "/") {
		p, perr := decide.ParsePrefix(arg)
		if perr != nil {
			apiError(ctx, fasthttp.StatusBadRequest, "%v", perr)
			return
		}
		var b decide.Ban
		var ok bool
		if b, ok, err = a.Service.Remove(c, p, now); ok {
			lifted = append(lifted, b)
		}
	} else {
		ip, ok := parseIP(ctx, arg)
		if !ok {
			return
		}
		lifted, err = a.Service.Unban(c, ip, now)
	}
	if err != nil {
		a.serviceError(ctx, err)
		return
	}
	active := 0
	for _, b := range lifted {
		if b.Active(now) {
			active++
		}
	}
	if active == 0 {
		apiError(ctx, fasthttp.StatusNotFound, "no ban covers %s", arg)
		return
	}
	if proxiesNotRefreshed(c, ctx) {
		return
	}
	ctx.SetStatusCode(fasthttp.StatusNoContent)
}

func (a *API) explain(c context.Context, ctx *fasthttp.RequestCtx) {
	ip, ok := parseIP(ctx, string(ctx.QueryArgs().Peek("ip")))
	if !ok {
		return
	}
	e := a.Service.Explain(c, ip, a.Now())
	out := DecideJSON{IP: e.Addr.String(), Verdict: "deny", Reason: e.Verdict.Reason.String(), Failures: e.Failures}
	if e.Verdict.Allow {
		out.Verdict = "allow"
	}
	if e.Verdict.Reason == decide.Banned {
		out.Key, out.Until = e.Verdict.Key.String(), e.Verdict.Until.Format(time.RFC3339)
	}
	writeJSON(ctx, fasthttp.StatusOK, out)
}

// serviceError answers 503: the service could not make the change, or made
// it in memory without writing it (errors.Is(err, engine.ErrNotSaved)).
func (a *API) serviceError(ctx *fasthttp.RequestCtx, err error) {
	a.Log.Error("api", "path", string(ctx.Path()), "err", err)
	msg := err.Error()
	if errors.Is(err, engine.ErrNotSaved) {
		msg = "the change is in force but was not saved: " + msg
	}
	apiError(ctx, fasthttp.StatusServiceUnavailable, "%s", msg)
}

// readJSON decodes one JSON object into v, strictly: unknown fields, wrong
// types and trailing data are a 400.
func readJSON(ctx *fasthttp.RequestCtx, v any) bool {
	body := ctx.PostBody()
	if len(body) > MaxBody {
		apiError(ctx, fasthttp.StatusRequestEntityTooLarge, "body larger than %d bytes", MaxBody)
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		apiError(ctx, fasthttp.StatusBadRequest, "bad JSON: %v", err)
		return false
	}
	if dec.More() {
		apiError(ctx, fasthttp.StatusBadRequest, "bad JSON: data after the object")
		return false
	}
	return true
}

func parseIP(ctx *fasthttp.RequestCtx, s string) (netip.Addr, bool) {
	if s == "" {
		apiError(ctx, fasthttp.StatusBadRequest, `missing "ip"`)
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		apiError(ctx, fasthttp.StatusBadRequest, `"ip": %q is not an IP address`, truncate(s, 64))
		return netip.Addr{}, false
	}
	return a, true // the service cleans it
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func writeJSON(ctx *fasthttp.RequestCtx, status int, v any) {
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	b, _ := json.Marshal(v)
	ctx.SetBody(append(b, '\n'))
}

func apiError(ctx *fasthttp.RequestCtx, status int, format string, args ...any) {
	writeJSON(ctx, status, map[string]string{"error": fmt.Sprintf(format, args...)})
}

// APIError answers a request the server could not read: 413 for a body over
// MaxBody, 431 for oversized headers, else 400; always JSON.
func APIError(ctx *fasthttp.RequestCtx, err error) {
	var tooBig *fasthttp.ErrSmallBuffer
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		apiError(ctx, fasthttp.StatusRequestEntityTooLarge, "body larger than %d bytes", MaxBody)
	case errors.As(err, &tooBig):
		apiError(ctx, fasthttp.StatusRequestHeaderFieldsTooLarge, "request headers too large")
	default:
		apiError(ctx, fasthttp.StatusBadRequest, "bad request: %v", err)
	}
}
