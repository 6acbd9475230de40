package ui

import (
	"bytes"
	"context"
	"net/netip"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/engine"
	"github.com/doorman/doorman/internal/gate"
)

// maxRows is how many bans the page lists; the filter finds the others.
const maxRows = 500

type banRow struct {
	Key, Reason, Note string
	Count             int
	Until             time.Time
}

type explanation struct {
	IP, Verdict, Reason, Key string
	Allow                    bool
	Until                    time.Time
	Failures                 int
	Feed                     string // the feed that denied
	Place                    Place
}

type pageData struct {
	Version       string
	Now           time.Time
	DryRun        bool
	Cluster       bool
	RedisUp       bool
	LastSync      time.Time
	LoginRequired bool
	CSRF          string
	Flash         string

	Stats     decide.Stats
	Filter    string
	Bans      []banRow
	Matching  int // bans matching the filter
	Decisions chart
	Failures  chart
	Top       []rangeCount

	ExplainIP  string
	Explain    *explanation
	ExplainErr string

	Events    []engine.HistoryEntry
	EventsErr string

	Accounts bool // accounts enabled
	Locks    []decide.Lock

	Feeds []Feed

	Gate      bool // the gate is on
	GateCreds []gate.Info
}

func (u *UI) show(ctx *fasthttp.RequestCtx) {
	id, ses, ok := u.session(ctx)
	if !ok {
		u.renderLogin(ctx, fasthttp.StatusOK, "")
		return
	}
	now := u.o.Now()
	q := ctx.QueryArgs()
	d := pageData{Version: u.o.Version, Now: now, DryRun: u.o.DryRun, Cluster: u.o.RedisUp != nil,
		LoginRequired: u.o.Token != "", CSRF: ses.csrf, Flash: u.sessions.takeFlash(id),
		Stats: u.o.Service.Stats(now), Filter: strings.TrimSpace(string(q.Peek("q")))}
	if d.Cluster {
		d.RedisUp = u.o.RedisUp()
		if u.o.LastSync != nil {
			d.LastSync = u.o.LastSync()
		}
	}
	bans := u.o.Service.Bans(now)
	match := filter(d.Filter)
	for i := len(bans) - 1; i >= 0; i-- { // newest first
		b := bans[i]
		if !match(b) {
			continue
		}
		d.Matching++
		if len(d.Bans) < maxRows {
			d.Bans = append(d.Bans, banRow{Key: b.Key.String(), Reason: b.Reason(), Note: b.Note, Count: b.Count, Until: b.Until})
		}
	}
	d.Top = topRanges(bans, 10)
	var names []string
	var series []int
	for _, r := range decide.Reasons() {
		names, series = append(names, r.String()), append(series, int(r))
	}
	d.Decisions = drawChart(u.ring, series, names, now)
	d.Failures = drawChart(u.ring, []int{seriesFailures}, []string{"failures"}, now)
	if s := strings.TrimSpace(string(q.Peek("ip"))); s != "" {
		d.ExplainIP = trunc(s)
		d.Explain, d.ExplainErr = u.explain(s, now)
	}
	if d.Accounts = u.accountsOn(); d.Accounts {
		d.Locks = u.o.Accounts.Locks(now)
		d.Locks = d.Locks[:min(len(d.Locks), maxRows)]
	}
	if u.o.Feeds != nil {
		d.Feeds = u.o.Feeds()
	}
	if d.Gate = u.o.Gate != nil; d.Gate {
		d.GateCreds = u.o.Gate.Credentials()
		d.GateCreds = d.GateCreds[:min(len(d.GateCreds), maxRows)]
	}
	if u.o.History != nil {
		var err error
		if d.Events, err = u.o.History.Last(20); err != nil {
			d.EventsErr = err.Error()
		}
	}
	var b bytes.Buffer
	if err := u.page.Execute(&b, d); err != nil {
		u.text(ctx, fasthttp.StatusInternalServerError, "template: "+err.Error())
		return
	}
	ctx.SetContentType("text/html; charset=utf-8")
	ctx.SetBody(b.Bytes())
}

func (u *UI) explain(s string, now time.Time) (*explanation, string) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return nil, "not an IP address"
	}
	c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	e := u.o.Service.Explain(c, a, now)
	x := &explanation{IP: e.Addr.String(), Allow: e.Verdict.Allow, Reason: e.Verdict.Reason.String(), Failures: e.Failures, Verdict: "denied"}
	if x.Allow {
		x.Verdict = "allowed"
	}
	if e.Verdict.Reason == decide.Banned {
		x.Key, x.Until = e.Verdict.Key.String(), e.Verdict.Until
	}
	if e.Verdict.Reason == decide.Feed {
		x.Feed = e.Verdict.Source
	}
	if u.o.Locate != nil {
		x.Place = u.o.Locate(e.Addr)
	}
	return x, ""
}

// filter returns the test for the ban list's filter: an address matches the
// bans covering it, a CIDR the bans overlapping it, other text the bans whose
// key, reason or note contain it (case-insensitive).
func filter(q string) func(decide.Ban) bool {
	if q == "" {
		return func(decide.Ban) bool { return true }
	}
	if a, err := netip.ParseAddr(q); err == nil {
		a = decide.Clean(a)
		return func(b decide.Ban) bool { return b.Key.Contains(a) }
	}
	if p, err := netip.ParsePrefix(q); err == nil {
		p = p.Masked()
		return func(b decide.Ban) bool { return b.Key.Overlaps(p) }
	}
	q = strings.ToLower(q)
	return func(b decide.Ban) bool {
		return strings.Contains(b.Key.String(), q) || strings.Contains(strings.ToLower(b.Note), q) || strings.Contains(b.Reason(), q)
	}
}
