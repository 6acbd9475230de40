package server

import (
	"net/netip"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/nginxcache"
)

var (
	hdrAccelExpires = []byte("X-Accel-Expires")
	hdrRefresh      = []byte("X-Doorman-Refresh")
	valNotKept      = []byte("0")  // nginx does not store the answer
	valExpired      = []byte("@1") // nginx stores it as already expired: it replaces the entry, and is never served
)

// Cache is the decision handler's part in nginx's cached mode
// (docs/nginx.md): it says in X-Accel-Expires how long nginx may keep each
// /decide verdict, and remembers what it let nginx keep, for the refreshes.
// A nil *Cache is plain mode: no X-Accel-Expires.
type Cache struct {
	Set *nginxcache.Set
	TTL time.Duration // DOORMAN_CACHE_TTL: the longest any verdict is kept
	// Failures returns the failures of a's unit within the window counted
	// by this instance (decide.Core.Failures). An address with failures is
	// never kept: it is asked about on every request until it is banned or
	// its failures expire.
	Failures func(a netip.Addr, now time.Time) int
	// NAT64 are DOORMAN_NAT64_PREFIXES. A client inside one is judged as
	// the IPv4 address it embeds, but nginx keys its cache entry by the
	// IPv6 address: a change of the IPv4 address's bans could not name that
	// entry in a refresh, so such verdicts are never kept.
	NAT64 []netip.Prefix
}

// nat64 reports whether a is inside a NAT64 prefix.
func (c *Cache) nat64(a netip.Addr) bool {
	for _, p := range c.NAT64 {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// mark is read before the verdict is made; see nginxcache.Set.Change.
func (c *Cache) mark() uint64 {
	if c == nil {
		return 0
	}
	return c.Set.Mark()
}

// expires sets X-Accel-Expires on a /decide answer: "@T" when nginx may keep
// verdict v until the end of second T (and the key is remembered), else "0".
// raw is the client-IP header the address a was read from (nil: the peer's
// own address, which is not nginx's cache key). An answer to
// /_doorman_refresh (X-Doorman-Refresh set) that may not be kept is "@1"
// instead: nginx keeps nothing on "0" and would go on serving the verdict
// the refresh was meant to replace, while "@1" replaces it with one already
// expired. It does not allocate.
func (c *Cache) expires(ctx *fasthttp.RequestCtx, dryRun bool, a netip.Addr, raw []byte, v decide.Verdict, now time.Time, mark uint64) {
	if c == nil {
		return
	}
	h := &ctx.Response.Header
	// nginx's cache key is the header as a trusted nginx sent it, when it
	// is nginx's exact writing of the address decided on; another writing
	// could not be named in a refresh.
	k, known := nginxcache.Key{}, false
	if raw != nil {
		k, known = nginxcache.KeyFor(a, raw)
	}
	if known && !dryRun && !c.nat64(a) && c.Failures(a, now) == 0 {
		if e, keep := nginxcache.ExpiryOf(v, now, c.TTL); keep && c.Set.Remember(k, v.Reason, e.Gone, now, mark) {
			var buf [24]byte
			h.SetCanonical(hdrAccelExpires, strconv.AppendInt(append(buf[:0], '@'), e.Last, 10))
			return
		}
	}
	if known && len(ctx.Request.Header.PeekBytes(hdrRefresh)) > 0 {
		h.SetCanonical(hdrAccelExpires, valExpired)
		return
	}
	h.SetCanonical(hdrAccelExpires, valNotKept)
}
