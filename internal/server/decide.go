package server

import (
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"time"
	"unsafe"

	"github.com/gaissmai/bart"
	"github.com/valyala/fasthttp"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/engine"
)

var (
	hdrVerdict    = []byte("X-Doorman-Verdict")
	hdrReason     = []byte("X-Doorman-Reason")
	hdrRetryAfter = []byte("Retry-After")
	valAllow      = []byte("allow")
	valDeny       = []byte("deny")
	// reasonValues are the X-Doorman-Reason values by [dry run][reason].
	reasonValues = func() (v [2][decide.NumReasons][]byte) {
		for _, r := range decide.Reasons() {
			v[0][r] = []byte(r.String())
			v[1][r] = []byte("dry-run-" + r.String())
		}
		return v
	}()
)

// Verdicts is what the decision handler asks: *engine.Local (or a
// decide.Core) satisfies it.
type Verdicts interface {
	Decide(a netip.Addr, now time.Time) decide.Verdict
}

// Decider is the decision handler.
type Decider struct {
	Core    Verdicts
	Header  string     // the client-IP header, e.g. X-Real-IP
	Trusted *bart.Lite // peers whose Header is believed
	Unix    bool       // the listener is a unix socket: every peer is trusted
	DryRun  bool       // always allow; report the would-be verdict
	Now     func() time.Time
	Metrics *engine.Metrics
	Log     *slog.Logger
	// ExposeReason sends X-Doorman-Verdict and X-Doorman-Reason on
	// /forward-auth and /ext-authz/ too (DOORMAN_EXPOSE_REASON). Off by
	// default: those proxies copy a denial's headers to the client.
	ExposeReason bool
	// Cache is nginx's cached mode (cached.go); nil: no verdict is kept.
	Cache *Cache
	// Gate serves /gate and /forward-auth/gate (gate.go); nil: the gate is
	// off and those paths always ask for it.
	Gate *GateCheck
}

// NewTrusted builds the trusted-proxy table.
func NewTrusted(ps []netip.Prefix) *bart.Lite {
	t := new(bart.Lite)
	for _, p := range ps {
		t.Insert(p)
	}
	return t
}

// Handle answers one decision request by the contract its path names:
// /gate and /forward-auth/gate (gate.go), /forward-auth and /ext-authz/…
// (forward.go), else /decide, nginx's auth_request. It does not allocate.
func (d *Decider) Handle(ctx *fasthttp.RequestCtx) {
	uri := ctx.Request.Header.RequestURI()
	switch {
	case gatePath(uri, pathGate):
		d.gate(ctx)
		return
	case gatePath(uri, pathForwardGate):
		d.forwardGate(ctx)
		return
	}
	if forwardPath(uri) {
		d.forward(ctx)
		return
	}
	d.decide(ctx)
}

// decide answers /decide: 204 or 403, with X-Doorman-Verdict and
// X-Doorman-Reason (nginx does not pass them on) and Retry-After on a ban.
func (d *Decider) decide(ctx *fasthttp.RequestCtx) {
	mark := d.Cache.mark()
	a, raw, ok := d.client(ctx)
	v, now := d.judge(ctx, a, ok)
	h := &ctx.Response.Header
	if v.Allow || d.DryRun {
		ctx.SetStatusCode(fasthttp.StatusNoContent)
		h.SetCanonical(hdrVerdict, valAllow)
	} else {
		ctx.SetStatusCode(fasthttp.StatusForbidden)
		h.SetCanonical(hdrVerdict, valDeny)
		setRetryAfter(h, v, now)
	}
	h.SetCanonical(hdrReason, d.reasonValue(v))
	d.Cache.expires(ctx, d.DryRun, a, raw, v, now, mark)
}

// judge decides on the client address a (none when !ok), counts the verdict
// and, in dry-run mode, logs a would-be denial. Every endpoint shares it and
// writes its own answer.
func (d *Decider) judge(ctx *fasthttp.RequestCtx, a netip.Addr, ok bool) (decide.Verdict, time.Time) {
	now := d.Now()
	v := decide.Verdict{Reason: decide.NoClientIP}
	if ok {
		v = d.Core.Decide(a, now)
	}
	d.Metrics.Decision(v.Reason, ctx.ConnID())
	if d.DryRun && !v.Allow {
		d.Log.Info("dry-run deny", "reason", v.Reason.String(), "peer", ctx.RemoteAddr().String())
	}
	return v, now
}

// setRetryAfter tells a banned client when its ban ends.
func setRetryAfter(h *fasthttp.ResponseHeader, v decide.Verdict, now time.Time) {
	if v.Reason == decide.Banned {
		var buf [20]byte
		h.SetCanonical(hdrRetryAfter, strconv.AppendInt(buf[:0], retryAfter(v.Until, now), 10))
	}
}

// reasonValue is the X-Doorman-Reason of v, dry-run-… in dry-run mode.
func (d *Decider) reasonValue(v decide.Verdict) []byte {
	if d.DryRun {
		return reasonValues[1][v.Reason]
	}
	return reasonValues[0][v.Reason]
}

// retryAfter is the whole seconds left, rounded up so a client never retries early.
func retryAfter(until, now time.Time) int64 {
	left := until.Sub(now)
	return int64((left + time.Second - 1) / time.Second)
}

// client returns the address to decide on, and the header value it was read
// from (nil when the peer is the client). The header is believed only from a
// trusted peer; from any other peer it is ignored and the peer is the client.
// A trusted peer must send the header exactly once with a parseable address:
// anything else is a misconfiguration or a forgery, so no client (deny).
func (d *Decider) client(ctx *fasthttp.RequestCtx) (a netip.Addr, raw []byte, ok bool) {
	if !d.Unix {
		peer := peerAddr(ctx)
		if !peer.IsValid() {
			return netip.Addr{}, nil, false
		}
		if !d.Trusted.Lookup(peer) {
			return peer, nil, true
		}
	}
	vals := ctx.Request.Header.PeekAll(d.Header)
	if len(vals) != 1 {
		return netip.Addr{}, nil, false
	}
	// The string does not outlive this call: ParseAddr copies what it keeps.
	// The Core unmaps and drops zones.
	a, err := netip.ParseAddr(unsafe.String(unsafe.SliceData(vals[0]), len(vals[0])))
	if err != nil {
		return netip.Addr{}, nil, false
	}
	return a, vals[0], true
}

func peerAddr(ctx *fasthttp.RequestCtx) netip.Addr {
	if t, ok := ctx.RemoteAddr().(*net.TCPAddr); ok {
		a, _ := netip.AddrFromSlice(t.IP)
		return a.Unmap()
	}
	return netip.Addr{}
}

// DecideError answers a request the server could not read: 403, fail closed.
// When the head was read and names /forward-auth or /ext-authz/ (a body over
// the limit, say), the answer carries no X-Doorman-* header, as those proxies
// pass it to the client. A head that could not be read names no path and gets
// /decide's answer, whose reason, no-client-ip, is the same for every client.
func DecideError(ctx *fasthttp.RequestCtx, _ error) {
	ctx.ResetBody()
	ctx.SetStatusCode(fasthttp.StatusForbidden)
	if forwardPath(ctx.Request.Header.RequestURI()) {
		return
	}
	ctx.Response.Header.SetCanonical(hdrVerdict, valDeny)
	ctx.Response.Header.SetCanonical(hdrReason, reasonValues[0][decide.NoClientIP])
}
