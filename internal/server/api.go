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
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/api"
	"github.com/doorman/doorman/internal/engine"
	"github.com/doorman/doorman/internal/gate"
	"github.com/doorman/doorman/internal/requestid"
)

// MaxBody is the largest request body the API reads.
const MaxBody = 4 << 10

// apiTimeout bounds the service calls of one API request (Redis round trips
// in cluster mode).
const apiTimeout = 5 * time.Second

// API is the JSON API handler.
type API struct {
	Service *engine.Local
	Token   string // empty: no token required
	Now     func() time.Time
	Metrics *engine.Metrics // served on /metrics
	Log     *slog.Logger
	Events  *engine.History         // GET /v1/events; nil: none kept
	UI      fasthttp.RequestHandler // /ui/, the status page, with its own login; nil: 404
	// Accounts serves /v1/attempts and /v1/accounts and the account side of
	// failures and successes; nil: accounts off. DryRun: /v1/attempts allows.
	Accounts *engine.Accounts
	DryRun   bool
	// Seen holds the request ids of failures counted lately, shared with
	// the learning listener: a failure reported with a request id already
	// counted is answered but not counted again. nil: every report counts.
	Seen *requestid.Seen
	// Locate says where an address is (country, network), for the explain
	// answer; nil: no address database.
	Locate func(netip.Addr) Place
	// Feed serves GET /v1/feed; nil: 404.
	Feed *Feed
	// Gate serves /v1/gate/… (gate_api.go); nil: the gate is off.
	Gate *gate.Gate
}

// Place is what the address databases say of an address. Zero fields are
// unknown.
type Place struct {
	Country string
	ASN     uint32
	Org     string
	Network netip.Prefix
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
	case path == "/v1/feed" && a.Feed != nil:
		if a.method(ctx, "GET", "HEAD") {
			a.Feed.serve(ctx, a.Now())
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

// readAddr decodes a {"ip":…,"username":…,"request_id":…} body, parses its
// address, normalises its username (in.Username; "" when none was given) and
// checks its request id (api.RequestID).
func readAddr(ctx *fasthttp.RequestCtx) (api.AddrIn, netip.Addr, bool) {
	var in api.AddrIn
	if !readJSON(ctx, &in) {
		return in, netip.Addr{}, false
	}
	ip, ok := parseIP(ctx, in.IP)
	if !ok {
		return in, ip, false
	}
	if in.Username, ok = accountName(ctx, in.Username); !ok {
		return in, ip, false
	}
	var err error
	if in.RequestID, err = api.RequestID(in.RequestID); err != nil {
		apiError(ctx, fasthttp.StatusBadRequest, "%v", err)
		return in, ip, false
	}
	return in, ip, true
}

func (a *API) failure(c context.Context, ctx *fasthttp.RequestCtx) {
	in, ip, ok := readAddr(ctx)
	if !ok {
		return
	}
	user := in.Username
	now := a.Now()
	if !a.Seen.First([]byte(in.RequestID), now) {
		a.duplicateFailure(c, ctx, ip, user, in.Device, now)
		return
	}
	res, err := a.Service.Fail(c, ip, user, now)
	if err != nil {
		a.serviceError(ctx, err) // the ban holds in memory; say it was not saved
		return
	}
	out := api.FailureJSON{IP: res.Addr.String(), Key: res.Key.String(), Failures: res.Failures, NeverBan: res.NeverBan}
	if res.InForce() {
		out.Banned, out.Until = true, res.Ban.Until.Format(time.RFC3339)
	}
	if out.Account, err = a.accountFailure(c, user, in.Device, now); err != nil {
		a.serviceError(ctx, err) // the lock holds in memory; say it was not saved
		return
	}
	writeReceipt(ctx, fasthttp.StatusOK, out, res.Receipt)
}

// duplicateFailure answers a failure whose request id was counted already:
// the address's state as it is, and the account's failure, which only the
// webhook knows of, counted.
func (a *API) duplicateFailure(c context.Context, ctx *fasthttp.RequestCtx, ip netip.Addr, user, device string, now time.Time) {
	ex := a.Service.Explain(c, ip, now)
	out := api.FailureJSON{IP: ex.Addr.String(), Key: ex.Verdict.Key.String(), Failures: ex.Failures, Duplicate: true}
	if ex.Verdict.Reason == decide.Banned {
		out.Banned, out.Until = true, ex.Verdict.Until.Format(time.RFC3339)
	}
	var err error
	if out.Account, err = a.accountFailure(c, user, device, now); err != nil {
		a.serviceError(ctx, err)
		return
	}
	writeJSON(ctx, fasthttp.StatusOK, out)
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
	out := api.SuccessJSON{IP: ip.String(), Key: key.String()}
	if err := a.deviceToken(c, &out, user, in.Device, now); err != nil {
		a.serviceError(ctx, err)
		return
	}
	writeJSON(ctx, fasthttp.StatusOK, out)
}

func (a *API) listBans(ctx *fasthttp.RequestCtx) {
	bans := a.Service.Bans(a.Now())
	out := api.BansJSON{Bans: make([]api.BanJSON, len(bans))}
	for i, b := range bans {
		out.Bans[i] = api.BanOf(b)
	}
	writeJSON(ctx, fasthttp.StatusOK, out)
}

func (a *API) ban(c context.Context, ctx *fasthttp.RequestCtx) {
	var in api.BanIn
	if !readJSON(ctx, &in) {
		return
	}
	want, err := api.ParseBan(in.IP, in.Duration, in.Reason)
	if err != nil {
		apiError(ctx, fasthttp.StatusBadRequest, "%v", err)
		return
	}
	b, err := a.Service.Ban(c, want.Prefix, want.Duration, want.Note, a.Now())
	if errors.Is(err, decide.ErrTableFull) {
		apiError(ctx, fasthttp.StatusConflict, "%v (DOORMAN_MAX_BANS)", err)
		return
	} else if errors.Is(err, decide.ErrTooWide) {
		apiError(ctx, fasthttp.StatusBadRequest, `"ip": %q: %v`, truncate(in.IP, 64), err)
		return
	} else if err != nil {
		a.serviceError(ctx, err)
		return
	}
	writeReceipt(ctx, fasthttp.StatusCreated, api.BanOf(b.Ban), b.Receipt)
}

// unban answers DELETE /v1/bans/{ip or CIDR} (api.ParseUnban): 204, 404
// when no ban in force covers it.
func (a *API) unban(c context.Context, ctx *fasthttp.RequestCtx, arg string) {
	target, err := api.ParseUnban(arg)
	if err != nil {
		apiError(ctx, fasthttp.StatusBadRequest, "%v", err)
		return
	}
	now := a.Now()
	lifted, err := a.Service.Lift(c, target.Addr, target.Prefix, now)
	if err != nil {
		a.serviceError(ctx, err)
		return
	}
	active := lifted.Active(now)
	if len(active) == 0 {
		apiError(ctx, fasthttp.StatusNotFound, "no ban covers %s", truncate(arg, 64))
		return
	}
	noContent(ctx, lifted.Receipt)
}

func (a *API) explain(c context.Context, ctx *fasthttp.RequestCtx) {
	ip, ok := parseIP(ctx, string(ctx.QueryArgs().Peek("ip")))
	if !ok {
		return
	}
	e := a.Service.Explain(c, ip, a.Now())
	out := api.DecideJSON{IP: e.Addr.String(), Verdict: "deny", Reason: e.Verdict.Reason.String(), Failures: e.Failures}
	if e.Verdict.Allow {
		out.Verdict = "allow"
	}
	if e.Verdict.Reason == decide.Banned {
		out.Key, out.Until = e.Verdict.Key.String(), e.Verdict.Until.Format(time.RFC3339)
	}
	if e.Verdict.Reason == decide.Feed {
		out.Feed = e.Verdict.Source
	}
	if a.Locate != nil {
		p := a.Locate(e.Addr)
		out.Country, out.Org = p.Country, p.Org
		if p.ASN != 0 {
			out.ASN = fmt.Sprintf("AS%d", p.ASN)
		}
		if p.Network.IsValid() {
			out.Network = p.Network.String()
		}
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

// noContent answers a change that has nothing to show: 204, or 200 with the
// receipt's reports when one of them is false (a 204 has no body to say it).
func noContent(ctx *fasthttp.RequestCtx, r engine.Receipt) {
	if !r.Failed() {
		ctx.SetStatusCode(fasthttp.StatusNoContent)
		return
	}
	out := make(map[string]bool, len(r.Reports))
	for _, x := range r.Reports {
		out[x.Name] = x.OK
	}
	writeJSON(ctx, fasthttp.StatusOK, out)
}

// writeReceipt answers v, a JSON object, with the receipt's reports added as
// its last fields: {"key":…,"proxies_refreshed":true}. A hook's report shows
// with no change here.
func writeReceipt(ctx *fasthttp.RequestCtx, status int, v any, r engine.Receipt) {
	b, _ := json.Marshal(v)
	if len(r.Reports) > 0 && len(b) >= 2 && b[len(b)-1] == '}' {
		b = b[:len(b)-1]
		for _, x := range r.Reports {
			if b[len(b)-1] != '{' {
				b = append(b, ',')
			}
			name, _ := json.Marshal(x.Name)
			b = append(append(b, name...), ':')
			b = strconv.AppendBool(b, x.OK)
		}
		b = append(b, '}')
	}
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBody(append(b, '\n'))
}

func writeJSON(ctx *fasthttp.RequestCtx, status int, v any) {
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	b, _ := json.Marshal(v)
	ctx.SetBody(append(b, '\n'))
}

func apiError(ctx *fasthttp.RequestCtx, status int, format string, args ...any) {
	writeJSON(ctx, status, api.ErrorJSON{Error: fmt.Sprintf(format, args...)})
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
