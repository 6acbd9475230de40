package server

import (
	"bytes"
	"net/url"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/doorman/doorman/decide"
)

// The gate's decision paths (docs/gate.md):
//
//   - /gate: nginx's auth_request for a gated location. The session comes in
//     X-Doorman-Gate (nginx passes $cookie_doorman_gate). 204, 403, or 401
//     gate-required, which nginx turns into a redirect to the gate page.
//   - /forward-auth/gate: Traefik's and Caddy's forward auth. The session is
//     the doorman_gate cookie of Cookie. 200, 403, or 302 to the gate page
//     with the original URL in rd when its origin is one of
//     DOORMAN_GATE_ORIGINS (never elsewhere: no open redirect).
//
// Order: the deny list (403, never passed); a valid session (allow, reason
// gate: it passes address bans and, with DOORMAN_GATE_BYPASS_ALLOW, the
// allowlist); outside the allowlist, banned, no client: 403; else the gate.
// Every answer on /gate carries X-Accel-Expires: 0: a session holder's allow
// is never kept by address, so cached mode cannot hand it to another client
// behind the same address. A valid session also sends X-Doorman-User.
var (
	pathGate        = []byte("/gate")
	pathForwardGate = []byte("/forward-auth/gate")
	hdrGate         = []byte("X-Doorman-Gate")
	hdrUser         = []byte("X-Doorman-User")
	hdrLocation     = []byte("Location")
	hdrFwdProto     = []byte("X-Forwarded-Proto")
	hdrFwdHost      = []byte("X-Forwarded-Host")
	hdrFwdURI       = []byte("X-Forwarded-Uri")
	valGate         = []byte("gate")
	valGateRequired = []byte("gate-required")
	cookieGate      = []byte("doorman_gate")
	gatePage        = []byte("/_doorman/gate")
	rdParam         = []byte("?rd=")
)

// GateCheck is the gate's part of the decision handler.
type GateCheck struct {
	Sessions    *decide.Gate // nil: the gate is off, every request needs it (401/302)
	BypassAllow bool         // DOORMAN_GATE_BYPASS_ALLOW
	// Origins are the gated sites' origins, scheme://host[:port], as
	// forwarded requests name them; the first is where a request from
	// another one is sent to sign in.
	Origins [][]byte
	Metrics *GateMetrics // nil: not counted
}

// GateOrigins turns the configured origins into GateCheck.Origins.
func GateOrigins(us []*url.URL) [][]byte {
	out := make([][]byte, len(us))
	for i, u := range us {
		out[i] = []byte(u.Scheme + "://" + u.Host)
	}
	return out
}

// gatePath reports which gate path uri names, if any: the exact path, or
// with a query or a subpath appended.
func gatePath(uri, path []byte) bool {
	rest, ok := bytes.CutPrefix(uri, path)
	return ok && (len(rest) == 0 || rest[0] == '?' || rest[0] == '/')
}

// gateOutcome is what the gate makes of a verdict and a session.
type gateOutcome uint8

const (
	gateAllow gateOutcome = iota
	gateDeny
	gateNeeded
)

// gateJudge decides a gated request from the address verdict v and the
// session token. It does not allocate.
func (d *Decider) gateJudge(v decide.Verdict, token []byte, now time.Time) (gateOutcome, decide.GateEntry) {
	if v.Reason == decide.Denylisted || v.Reason == decide.NoClientIP {
		return gateDeny, decide.GateEntry{}
	}
	g := d.Gate
	if g != nil && g.Sessions != nil && len(token) > 0 {
		e, ok := g.Sessions.Check(token, now)
		g.Metrics.session(ok)
		if ok && (v.Reason != decide.NotAllowlisted || g.BypassAllow) {
			return gateAllow, e
		}
	}
	if !v.Allow && !d.DryRun {
		return gateDeny, decide.GateEntry{}
	}
	return gateNeeded, decide.GateEntry{}
}

// gate answers /gate. It does not allocate.
func (d *Decider) gate(ctx *fasthttp.RequestCtx) {
	a, _, ok := d.client(ctx)
	v, now := d.judge(ctx, a, ok)
	out, e := d.gateJudge(v, ctx.Request.Header.PeekBytes(hdrGate), now)
	h := &ctx.Response.Header
	h.SetCanonical(hdrAccelExpires, valNotKept)
	switch out {
	case gateAllow:
		ctx.SetStatusCode(fasthttp.StatusNoContent)
		h.SetCanonical(hdrVerdict, valAllow)
		h.SetCanonical(hdrReason, valGate)
		h.SetCanonical(hdrUser, e.UserHeader)
	case gateDeny:
		ctx.SetStatusCode(fasthttp.StatusForbidden)
		h.SetCanonical(hdrVerdict, valDeny)
		h.SetCanonical(hdrReason, d.reasonValue(v))
		setRetryAfter(h, v, now)
	default:
		ctx.SetStatusCode(fasthttp.StatusUnauthorized)
		h.SetCanonical(hdrVerdict, valDeny)
		h.SetCanonical(hdrReason, valGateRequired)
	}
}

// forwardGate answers /forward-auth/gate.
func (d *Decider) forwardGate(ctx *fasthttp.RequestCtx) {
	a, ok := d.forwardedClient(ctx)
	v, now := d.judge(ctx, a, ok)
	out, e := d.gateJudge(v, ctx.Request.Header.CookieBytes(cookieGate), now)
	h := &ctx.Response.Header
	switch out {
	case gateAllow:
		ctx.SetStatusCode(fasthttp.StatusOK)
		h.SetCanonical(hdrUser, e.UserHeader)
	case gateDeny:
		ctx.SetStatusCode(fasthttp.StatusForbidden)
		setRetryAfter(h, v, now)
	default:
		ctx.SetStatusCode(fasthttp.StatusFound)
		d.gateLocation(ctx)
	}
	if d.ExposeReason {
		verdict, reason := valDeny, d.reasonValue(v)
		switch out {
		case gateAllow:
			verdict, reason = valAllow, valGate
		case gateNeeded:
			reason = valGateRequired
		}
		h.SetCanonical(hdrVerdict, verdict)
		h.SetCanonical(hdrReason, reason)
	}
}

// gateLocation sets Location to the gate page of the request's origin with
// the original URL in rd, when that origin is a gated one; otherwise to the
// first origin's gate page, without rd.
func (d *Decider) gateLocation(ctx *fasthttp.RequestCtx) {
	if d.Gate == nil || len(d.Gate.Origins) == 0 {
		ctx.SetStatusCode(fasthttp.StatusUnauthorized) // nowhere to send it
		return
	}
	rh := &ctx.Request.Header
	proto, host, uri := rh.PeekBytes(hdrFwdProto), rh.PeekBytes(hdrFwdHost), rh.PeekBytes(hdrFwdURI)
	origin := d.Gate.Origins[0]
	matched := false
	for _, o := range d.Gate.Origins {
		if originIs(o, proto, host) {
			origin, matched = o, true
			break
		}
	}
	var buf [2048]byte
	loc := append(append(buf[:0], origin...), gatePage...)
	if matched && len(uri) > 0 && uri[0] == '/' && len(loc)+len(rdParam)+3*(len(origin)+len(uri)) <= len(buf) {
		loc = append(loc, rdParam...)
		loc = appendQueryEscape(loc, origin)
		loc = appendQueryEscape(loc, uri)
	}
	ctx.Response.Header.SetCanonical(hdrLocation, loc)
}

// originIs reports whether o is proto://host.
func originIs(o, proto, host []byte) bool {
	rest, ok := bytes.CutPrefix(o, proto)
	if !ok || len(proto) == 0 {
		return false
	}
	rest, ok = bytes.CutPrefix(rest, []byte("://"))
	return ok && bytes.EqualFold(rest, host)
}

// appendQueryEscape appends s escaped for a query value: unreserved
// characters as they are, every other byte %XX.
func appendQueryEscape(dst, s []byte) []byte {
	const hex = "0123456789ABCDEF"
	for _, c := range s {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_', c == '.', c == '~', c == '/':
			dst = append(dst, c)
		default:
			dst = append(dst, '%', hex[c>>4], hex[c&15])
		}
	}
	return dst
}
