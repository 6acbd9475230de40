package server

import (
	"bytes"
	"net/netip"

	"github.com/gaissmai/bart"
	"github.com/valyala/fasthttp"

	"github.com/doorman/doorman/internal/accesslog"
)

// The forward-auth contract, shared by two paths:
//
//   - /forward-auth: Traefik's forwardAuth and Caddy's forward_auth. Caddy
//     appends the client's query string ("/forward-auth?x=1").
//   - /ext-authz/…: Envoy's ext_authz HTTP service with path_prefix
//     /ext-authz; Envoy appends the original path, keeps the original method
//     and sends only the headers it is told to.
//
// Both answer 200 (allow; Envoy and ingress-nginx's auth-keepalive treat
// anything else as a denial) or 403 with an empty body and Retry-After on a
// ban. These proxies copy a denial's headers to the client, so X-Doorman-*
// is sent only with DOORMAN_EXPOSE_REASON=true. Any method is accepted.
//
// The client address is read from X-Forwarded-For and nothing else: Caddy
// 2.6 passes the client's own X-Real-IP through untouched, and Traefik,
// Caddy and Envoy all append the address they saw to X-Forwarded-For.
var (
	pathForwardAuth = []byte("/forward-auth")
	pathExtAuthz    = []byte("/ext-authz")
)

// hdrForwardedFor is read on the forward paths only.
const hdrForwardedFor = "X-Forwarded-For"

// forwardPath reports whether the raw request target (before any decoding or
// dot-segment removal, so that no spelling of another path can land here or
// leave) starts with /forward-auth or /ext-authz.
func forwardPath(uri []byte) bool {
	return bytes.HasPrefix(uri, pathForwardAuth) || bytes.HasPrefix(uri, pathExtAuthz)
}

// forward answers /forward-auth and /ext-authz/…. It does not allocate.
func (d *Decider) forward(ctx *fasthttp.RequestCtx) {
	a, ok := d.forwardedClient(ctx)
	v, now := d.judge(ctx, a, ok)
	h := &ctx.Response.Header
	if v.Allow || d.DryRun {
		ctx.SetStatusCode(fasthttp.StatusOK)
	} else {
		ctx.SetStatusCode(fasthttp.StatusForbidden)
		setRetryAfter(h, v, now)
	}
	if d.ExposeReason {
		verdict := valDeny
		if v.Allow || d.DryRun {
			verdict = valAllow
		}
		h.SetCanonical(hdrVerdict, verdict)
		h.SetCanonical(hdrReason, d.reasonValue(v))
	}
}

// forwardedClient returns the address to decide on for the forward paths.
// From a peer outside DOORMAN_TRUSTED_PROXIES the peer is the client and no
// header is read. From a trusted peer (or on a unix socket) the client is
// the rightmost X-Forwarded-For address that is not itself a trusted proxy:
// every hop appends the address it saw, so the addresses right of it were
// written by trusted proxies and it was written by the first of them; what
// stands left of it came from the client and is never read.
//
// X-Forwarded-For must arrive as one header line. Traefik, Caddy and Envoy
// each send one line (joining what they received); two lines mean a proxy
// passed a client's own line next to its own, and from here it cannot be
// told which line that proxy wrote or appended to: a client that sends a
// second line could otherwise choose the address judged. So two lines, like
// a missing, empty or unparseable value or a chain of trusted proxies only,
// are no client (deny, no-client-ip).
func (d *Decider) forwardedClient(ctx *fasthttp.RequestCtx) (netip.Addr, bool) {
	if !d.Unix {
		peer := peerAddr(ctx)
		if !peer.IsValid() {
			return netip.Addr{}, false
		}
		if !d.Trusted.Lookup(peer) {
			return peer, true
		}
	}
	vals := ctx.Request.Header.PeekAll(hdrForwardedFor)
	if len(vals) != 1 {
		return netip.Addr{}, false
	}
	return forwardedFor(vals[0], d.Trusted)
}

// forwardedFor is accesslog.ForwardedFor: the learning listener walks the
// X-Forwarded-For of Caddy's records by the same rule.
func forwardedFor(v []byte, trusted *bart.Lite) (netip.Addr, bool) {
	return accesslog.ForwardedFor(v, trusted)
}
