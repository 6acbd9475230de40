package server

import (
	"encoding/hex"
	"encoding/json"
	"hash/fnv"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/engine"
)

// Feed serves GET /v1/feed: the bans in force as a deny feed, one CIDR a
// line (or JSON with ?format=json), for another doorman's
// DOORMAN_DENY_FEEDS, a firewall or a CDN rule. The answer carries
// X-Doorman-Feed: bans, which tells a doorman consumer that the feed may
// shrink (bans expire and are lifted), an ETag (a hash of the body) and
// Last-Modified (when this doorman first served that body), so pollers ask
// cheaply. Notes are left out: they are the operator's words, not the
// consumer's business. Safe for concurrent use.
type Feed struct {
	bans func(time.Time) []decide.Ban

	mu       sync.Mutex
	etag     string
	modified time.Time
}

// NewFeed serves svc's bans.
func NewFeed(svc *engine.Local) *Feed { return &Feed{bans: svc.Bans} }

type feedJSON struct {
	Bans []feedBanJSON `json:"bans"`
}

type feedBanJSON struct {
	CIDR   string `json:"cidr"`
	Until  string `json:"until"`
	Reason string `json:"reason"`
}

func (f *Feed) serve(ctx *fasthttp.RequestCtx, now time.Time) {
	bans := f.bans(now)
	var body []byte
	asJSON := string(ctx.QueryArgs().Peek("format")) == "json"
	if asJSON {
		out := feedJSON{Bans: make([]feedBanJSON, 0, len(bans))}
		for _, b := range bans {
			out.Bans = append(out.Bans, feedBanJSON{CIDR: b.Key.String(), Until: b.Until.Format(time.RFC3339), Reason: b.Reason()})
		}
		body, _ = json.Marshal(out)
		body = append(body, '\n')
	} else {
		var sb strings.Builder
		sb.WriteString("# doorman bans in force\n")
		for _, b := range bans {
			sb.WriteString(b.Key.String())
			sb.WriteByte('\n')
		}
		body = []byte(sb.String())
	}
	h := fnv.New64a()
	h.Write(body)
	etag := `"` + hex.EncodeToString(h.Sum(nil)) + `"`
	f.mu.Lock()
	if !asJSON && etag != f.etag {
		f.etag, f.modified = etag, now.UTC().Truncate(time.Second)
	}
	modified := f.modified
	if asJSON || modified.IsZero() {
		modified = now.UTC().Truncate(time.Second)
	}
	f.mu.Unlock()
	hd := &ctx.Response.Header
	hd.Set("X-Doorman-Feed", "bans")
	hd.Set("ETag", etag)
	hd.Set("Last-Modified", modified.Format(http.TimeFormat))
	hd.Set("Cache-Control", "no-cache")
	if notModified(ctx, etag, modified) {
		ctx.SetStatusCode(fasthttp.StatusNotModified)
		return
	}
	if asJSON {
		ctx.SetContentType("application/json")
	} else {
		ctx.SetContentType("text/plain; charset=utf-8")
	}
	ctx.SetBody(body)
}

// notModified applies If-None-Match, else If-Modified-Since (RFC 9110 13.2.2).
func notModified(ctx *fasthttp.RequestCtx, etag string, modified time.Time) bool {
	if inm := string(ctx.Request.Header.Peek("If-None-Match")); inm != "" {
		for tag := range strings.SplitSeq(inm, ",") {
			if t := strings.TrimSpace(tag); t == etag || t == "*" {
				return true
			}
		}
		return false
	}
	if ims := string(ctx.Request.Header.Peek("If-Modified-Since")); ims != "" {
		t, err := http.ParseTime(ims)
		return err == nil && !modified.After(t)
	}
	return false
}
