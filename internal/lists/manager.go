package lists

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/oschwald/maxminddb-golang/v2"

	"github.com/doorman/doorman/decide"
)

// Options configure a Manager.
type Options struct {
	// Static reads the configuration's allow, deny and never-ban lists
	// (the variables and their files); called at New and at each Reload.
	Static func() (decide.Spec, error)
	Feeds  []Feed
	// MaxPrefixes bounds the feeds' prefixes together, in the order of
	// Feeds: a feed beyond is cut.
	MaxPrefixes int
	// CacheDir holds the last good copy of each feed; empty: none kept.
	CacheDir       string
	CountryDB      string // .mmdb path; empty: none
	ASNDB          string
	AllowCountries []string
	DenyCountries  []string
	DenyASNs       []uint32
	Client         *http.Client
	Log            *slog.Logger
	// Set publishes each new Lists (decide.Core.SetLists, and whatever
	// must follow a change of the lists).
	Set func(*decide.Lists)
}

// Manager keeps the lists current. Safe for concurrent use.
type Manager struct {
	o       Options
	mu      sync.Mutex // serializes loads and rebuilds
	static  decide.Spec
	feeds   []*feed
	country *maxminddb.Reader
	asn     *maxminddb.Reader
	geo     geoNets
	lists   *decide.Lists
	cut     map[string]int // per feed: prefixes beyond MaxPrefixes at the last build
	places  sync.RWMutex   // guards country and asn for Locate
}

// geoNets are the networks of the configured countries and systems.
type geoNets struct {
	allow, deny map[string][]netip.Prefix
	asns        map[uint32][]netip.Prefix
}

// New reads the static lists, the databases and the cached feed copies,
// and publishes the first Lists. Any error here stops the start: a
// database that cannot be read with countries configured would otherwise
// deny (allow countries) or admit (deny countries) everyone.
func New(o Options) (*Manager, error) {
	m := &Manager{o: o}
	spec, err := o.Static()
	if err != nil {
		return nil, err
	}
	m.static = spec
	if err := m.loadDBs(); err != nil {
		return nil, err
	}
	for _, f := range o.Feeds {
		fs := &feed{Feed: f}
		if err := fs.load(o.CacheDir, o.MaxPrefixes); err != nil {
			o.Log.Warn("feed: cached copy unreadable; fetching afresh", "feed", f.Name, "err", err)
		}
		m.feeds = append(m.feeds, fs)
	}
	m.mu.Lock()
	m.rebuild()
	m.mu.Unlock()
	return m, nil
}

// loadDBs opens the databases and extracts the configured networks; on an
// error the databases in use stay.
func (m *Manager) loadDBs() error {
	var country, asn *maxminddb.Reader
	var g geoNets
	var err error
	if m.o.CountryDB != "" {
		if country, err = openDB(m.o.CountryDB); err != nil {
			return fmt.Errorf("DOORMAN_GEOIP_DB: %v", err)
		}
		want := append(append([]string(nil), m.o.AllowCountries...), m.o.DenyCountries...)
		nets, err := networks(country, want, countryOf)
		if err != nil {
			country.Close()
			return fmt.Errorf("DOORMAN_GEOIP_DB: %s: %v", m.o.CountryDB, err)
		}
		g.allow, g.deny = pick(nets, m.o.AllowCountries), pick(nets, m.o.DenyCountries)
		for _, cc := range want {
			if len(nets[cc]) == 0 {
				m.o.Log.Warn("geoip: no network for country", "country", cc, "db", m.o.CountryDB)
			}
		}
	}
	if m.o.ASNDB != "" {
		if asn, err = openDB(m.o.ASNDB); err != nil {
			if country != nil {
				country.Close()
			}
			return fmt.Errorf("DOORMAN_ASN_DB: %v", err)
		}
		if g.asns, err = networks(asn, m.o.DenyASNs, func(r maxminddb.Result) uint32 { n, _ := asnOf(r); return n }); err != nil {
			asn.Close()
			if country != nil {
				country.Close()
			}
			return fmt.Errorf("DOORMAN_ASN_DB: %s: %v", m.o.ASNDB, err)
		}
	}
	m.places.Lock()
	oldC, oldA := m.country, m.asn
	m.country, m.asn = country, asn
	m.places.Unlock()
	for _, r := range []*maxminddb.Reader{oldC, oldA} {
		if r != nil {
			r.Close()
		}
	}
	m.mu.Lock()
	m.geo = g
	m.mu.Unlock()
	return nil
}

func pick(nets map[string][]netip.Prefix, codes []string) map[string][]netip.Prefix {
	out := make(map[string][]netip.Prefix, len(codes))
	for _, cc := range codes {
		out[cc] = nets[cc]
	}
	return out
}

// rebuild composes the lists and publishes them. m.mu is held.
func (m *Manager) rebuild() {
	spec := m.static
	spec.Allow = append([]netip.Prefix(nil), spec.Allow...)
	if len(m.o.AllowCountries) > 0 {
		spec.AllowCountries = true
		for _, cc := range m.o.AllowCountries {
			spec.Allow = append(spec.Allow, m.geo.allow[cc]...)
		}
	}
	budget := m.o.MaxPrefixes
	m.cut = map[string]int{}
	for _, f := range m.feeds {
		ps := f.prefixes
		if len(ps) > budget {
			m.cut[f.Name] = len(ps) - budget
			ps = ps[:budget]
		}
		budget -= len(ps)
		spec.Sources = append(spec.Sources, decide.Source{Name: f.Name, Reason: decide.Feed, Prefixes: ps})
	}
	for _, cc := range m.o.DenyCountries {
		spec.Sources = append(spec.Sources, decide.Source{Name: cc, Reason: decide.Country, Prefixes: m.geo.deny[cc]})
	}
	for _, n := range m.o.DenyASNs {
		spec.Sources = append(spec.Sources, decide.Source{Name: "AS" + strconv.FormatUint(uint64(n), 10), Reason: decide.ASN, Prefixes: m.geo.asns[n]})
	}
	m.lists = decide.Build(spec)
	m.o.Set(m.lists)
}

// Refresh fetches every feed once and publishes the lists when one changed.
func (m *Manager) Refresh(ctx context.Context, now func() time.Time) {
	changed := false
	for _, f := range m.feeds {
		m.mu.Lock()
		snapshot := *f // fetch without holding the lock
		m.mu.Unlock()
		res, err := snapshot.fetch(ctx, m.o.Client, m.o.MaxPrefixes, now())
		m.mu.Lock()
		if err == nil {
			before := len(f.prefixes)
			err = f.accept(res)
			if err == nil && !res.notModified {
				changed = true
				if serr := f.save(m.o.CacheDir); serr != nil {
					m.o.Log.Warn("feed: last good copy not saved", "feed", f.Name, "dir", m.o.CacheDir, "err", serr)
				}
				m.o.Log.Info("feed loaded", "feed", f.Name, "prefixes", len(f.prefixes), "before", before,
					"skipped_wide", f.parsed.Wide, "skipped_local", f.parsed.Local, "malformed", f.parsed.Malformed)
			}
		}
		if err != nil {
			f.failures++
			f.lastErr, f.failedAt = err.Error(), now()
			m.o.Log.Warn("feed: keeping the last good copy", "feed", f.Name, "url", f.URL.Redacted(), "prefixes", len(f.prefixes), "err", err)
		} else {
			f.lastErr = ""
		}
		m.mu.Unlock()
	}
	if changed {
		m.mu.Lock()
		m.rebuild()
		m.mu.Unlock()
	}
}

// Run refreshes the feeds now and then every interval until ctx ends.
func (m *Manager) Run(ctx context.Context, every time.Duration, now func() time.Time) {
	if len(m.feeds) == 0 {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		m.Refresh(ctx, now)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Reload reads the static lists and the databases again (SIGHUP) and
// publishes the lists. On an error nothing changes.
func (m *Manager) Reload() error {
	spec, err := m.o.Static()
	if err != nil {
		return err
	}
	if err := m.loadDBs(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.static = spec
	m.rebuild()
	return nil
}

// Locate is what the databases say of a.
func (m *Manager) Locate(a netip.Addr) Place {
	m.places.RLock()
	defer m.places.RUnlock()
	return locate(m.country, m.asn, a)
}

// FeedStatus is one feed as the status page and the metrics show it.
type FeedStatus struct {
	Name      string
	URL       string // redacted
	Prefixes  int    // in force
	Cut       int    // beyond DOORMAN_FEED_MAX_PREFIXES
	Skipped   Parsed // counts of the last good copy
	Verified  time.Time
	Have      bool
	LastError string
	FailedAt  time.Time
	Failures  uint64
}

// Feeds returns the feeds' status, in configuration order.
func (m *Manager) Feeds() []FeedStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]FeedStatus, 0, len(m.feeds))
	for _, f := range m.feeds {
		n := len(f.prefixes) - m.cut[f.Name]
		out = append(out, FeedStatus{Name: f.Name, URL: f.URL.Redacted(), Prefixes: n, Cut: m.cut[f.Name], Skipped: f.parsed,
			Verified: f.meta.Verified, Have: f.have, LastError: f.lastErr, FailedAt: f.failedAt, Failures: f.failures})
	}
	return out
}

// Close releases the databases.
func (m *Manager) Close() {
	m.places.Lock()
	defer m.places.Unlock()
	for _, r := range []*maxminddb.Reader{m.country, m.asn} {
		if r != nil {
			r.Close()
		}
	}
	m.country, m.asn = nil, nil
}

// Network is the announced network holding a, from the ASN database; an
// invalid prefix when unknown. For range bans (decide.Core.SetNetworks).
func (m *Manager) Network(a netip.Addr) netip.Prefix {
	m.places.RLock()
	defer m.places.RUnlock()
	if m.asn == nil {
		return netip.Prefix{}
	}
	res := m.asn.Lookup(a)
	if !res.Found() {
		return netip.Prefix{}
	}
	p, _ := clean(res.Prefix())
	return p
}
