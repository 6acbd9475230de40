package main

import (
	"context"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strconv"
	"time"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/config"
	"github.com/doorman/doorman/internal/engine"
	"github.com/doorman/doorman/internal/lists"
	"github.com/doorman/doorman/internal/server"
	"github.com/doorman/doorman/internal/ui"
)

// feedTimeout bounds one feed fetch, connection to last byte.
const feedTimeout = 2 * time.Minute

// newLists starts the lists manager: the static lists, the cached feed
// copies and the country and network databases, published into core
// before New returns. changed runs after every later swap (cached mode
// re-asks nginx). The last good copies live in DIR/NAME.list beside the
// state file (STATE.feeds/); without a state file none is kept.
func newLists(cfg *config.Config, core *decide.Core, changed *func(), log *slog.Logger) (*lists.Manager, error) {
	dir := ""
	if cfg.StateFile != "" && len(cfg.Feeds) > 0 {
		dir = filepath.Join(filepath.Dir(cfg.StateFile), filepath.Base(cfg.StateFile)+".feeds")
	}
	feeds := make([]lists.Feed, len(cfg.Feeds))
	for i, f := range cfg.Feeds {
		feeds[i] = lists.Feed{Name: f.Name, URL: f.URL, Token: f.Token}
	}
	first := true
	lm, err := lists.New(lists.Options{Static: cfg.ListSpec, Feeds: feeds, MaxPrefixes: cfg.FeedMaxPrefixes, CacheDir: dir,
		CountryDB: cfg.GeoIPDB, ASNDB: cfg.ASNDB, AllowCountries: cfg.AllowCC, DenyCountries: cfg.DenyCC, DenyASNs: cfg.DenyASNList,
		Client: lists.NewClient(feedTimeout), Log: log,
		Set: func(l *decide.Lists) {
			core.SetLists(l)
			if !first {
				(*changed)()
			}
			first = false
		}})
	if err == nil && cfg.ASNDB != "" {
		core.SetNetworks(lm.Network) // range bans follow the announced network
	}
	return lm, err
}

// runFeeds registers the lists' metrics and refreshes the deny feeds every
// DOORMAN_FEED_REFRESH until stop.
func runFeeds(cfg *config.Config, lm *lists.Manager, m *engine.Metrics) (stop func()) {
	lm.Register(m.Set(), time.Now)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { lm.Run(ctx, cfg.FeedRefresh, time.Now); close(done) }()
	return func() { cancel(); <-done }
}

// locate is the API's view of the address databases.
func locate(m *lists.Manager) func(a netip.Addr) server.Place {
	return func(a netip.Addr) server.Place {
		p := m.Locate(a)
		return server.Place{Country: p.Country, ASN: p.ASN, Org: p.Org, Network: p.Network}
	}
}

// pageFeeds and pageLocate are the status page's view of the lists.
func pageFeeds(m *lists.Manager) func() []ui.Feed {
	return func() []ui.Feed {
		var out []ui.Feed
		for _, f := range m.Feeds() {
			out = append(out, ui.Feed{Name: f.Name, URL: f.URL, Prefixes: f.Prefixes, Skipped: f.Skipped.Skipped() + f.Cut,
				Verified: f.Verified, Error: f.LastError})
		}
		return out
	}
}

func pageLocate(m *lists.Manager) func(netip.Addr) ui.Place {
	return func(a netip.Addr) ui.Place {
		p := m.Locate(a)
		out := ui.Place{Country: p.Country, Org: p.Org}
		if p.ASN != 0 {
			out.ASN = "AS" + strconv.FormatUint(uint64(p.ASN), 10)
		}
		if p.Network.IsValid() {
			out.Network = p.Network.String()
		}
		return out
	}
}
