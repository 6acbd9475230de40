package nginxcache

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/engine"
)

// fakeNginx records the refresh requests it gets and answers as the refresh
// location passing doorman's answer on (or as broken, when told).
type fakeNginx struct {
	mu     sync.Mutex
	got    []string
	status int // 0: 204 with X-Doorman-Verdict
	srv    *httptest.Server
}

func newFakeNginx(t *testing.T) *fakeNginx {
	n := &fakeNginx{}
	n.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.mu.Lock()
		n.got = append(n.got, r.Header.Get("X-Doorman-Refresh"))
		status := n.status
		n.mu.Unlock()
		if status != 0 {
			w.WriteHeader(status) // nginx's own answer: no X-Doorman-Verdict
			return
		}
		w.Header().Set("X-Doorman-Verdict", "allow")
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(n.srv.Close)
	return n
}

func (n *fakeNginx) refreshed() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := slices.Clone(n.got)
	slices.Sort(out)
	n.got = nil
	return out
}

type refresherFixture struct {
	r      *Refresher
	set    *Set
	core   *decide.Core
	nginx  []*fakeNginx
	errors *metrics.Counter
	now    time.Time
}

func newRefresherFixture(t *testing.T, nginx int) *refresherFixture {
	f := &refresherFixture{now: t0.Add(time.Hour)}
	p := decide.Policy{MaxFailures: 3, FindTime: 10 * time.Minute, BanTime: time.Hour, BanFactor: 2,
		MaxBanTime: 168 * time.Hour, IPv4Prefix: 32, IPv6Prefix: 64}
	f.core = decide.New(p, nil, 1000, 1000)
	f.set = New(1000, 11*time.Second)
	var urls []string
	for range nginx {
		n := newFakeNginx(t)
		f.nginx = append(f.nginx, n)
		urls = append(urls, n.srv.URL+"/_doorman_refresh")
	}
	ms := metrics.NewSet()
	clock := t0 // the grace after the start has passed by f.now
	f.r = NewRefresher(RefresherOptions{URLs: urls, Set: f.set, TTL: 10 * time.Second, Verdict: f.core.Decide,
		Metrics: ms, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: func() time.Time { return clock }})
	clock = f.now
	f.r.now = func() time.Time { return f.now }
	f.errors = ms.GetOrCreateCounter("doorman_cache_refresh_errors_total")
	return f
}

func (f *refresherFixture) remember(addrs ...string) {
	for _, a := range addrs {
		f.set.Remember(key(a), f.core.Decide(key(a).Addr(), f.now).Reason, f.now.Add(10*time.Second), f.now, f.set.Mark())
	}
}

func TestRefresh(t *testing.T) {
	f := newRefresherFixture(t, 2)
	f.remember("192.0.2.1", "::ffff:192.0.2.1", "192.0.2.2", "198.51.100.1", "2001:db8::1", "2001:db8::2", "2001:db8:1::1")
	cases := []struct {
		name    string
		changed []string
		want    []string
	}{
		{"an IPv4 unit: both spellings", []string{"192.0.2.1/32"}, []string{"192.0.2.1", "::ffff:192.0.2.1"}},
		{"an IPv6 /64", []string{"2001:db8::/64"}, []string{"2001:db8::1", "2001:db8::2"}},
		{"a range", []string{"192.0.2.0/24"}, []string{"192.0.2.1", "192.0.2.2", "::ffff:192.0.2.1"}},
		{"a unit and the range holding it: each key once", []string{"192.0.2.1/32", "192.0.2.0/24"},
			[]string{"192.0.2.1", "192.0.2.2", "::ffff:192.0.2.1"}},
		{"nothing remembered inside", []string{"203.0.113.0/24"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var ps []netip.Prefix
			for _, p := range tc.changed {
				ps = append(ps, netip.MustParsePrefix(p))
			}
			if !f.r.Refresh(context.Background(), ps, netip.MustParseAddr("203.0.113.50")) {
				t.Error("Refresh reported a failure")
			}
			for i, n := range f.nginx {
				if got := n.refreshed(); !slices.Equal(got, tc.want) {
					t.Errorf("nginx %d refreshed %q, want %q", i, got, tc.want)
				}
			}
		})
	}
}

func TestRefreshNamedDuringGrace(t *testing.T) {
	f := newRefresherFixture(t, 1)
	f.now = t0.Add(5 * time.Second) // within TTL+Margin of the start
	f.r.Refresh(context.Background(), []netip.Prefix{netip.MustParsePrefix("203.0.113.50/32")}, netip.MustParseAddr("203.0.113.50"))
	if got, want := f.nginx[0].refreshed(), []string{"203.0.113.50", "::ffff:203.0.113.50"}; !slices.Equal(got, want) {
		t.Errorf("during the grace refreshed %q, want %q", got, want)
	}
	f.now = t0.Add(12 * time.Second)
	f.r.Refresh(context.Background(), []netip.Prefix{netip.MustParsePrefix("203.0.113.50/32")}, netip.MustParseAddr("203.0.113.50"))
	if got := f.nginx[0].refreshed(); len(got) != 0 {
		t.Errorf("after the grace refreshed %q, want nothing (not remembered)", got)
	}
}

func TestRefreshFailures(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		down   bool
	}{
		{"nginx refuses the caller", http.StatusForbidden, false},
		{"no refresh location", http.StatusNotFound, false},
		{"doorman unreachable from nginx", http.StatusInternalServerError, false},
		{"nginx down", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newRefresherFixture(t, 2)
			f.remember("192.0.2.1")
			f.nginx[1].status = tc.status
			if tc.down {
				f.nginx[1].srv.Close()
			}
			if f.r.Refresh(context.Background(), []netip.Prefix{netip.MustParsePrefix("192.0.2.1/32")}) {
				t.Error("Refresh reported success")
			}
			if got := f.errors.Get(); got != 1 {
				t.Errorf("doorman_cache_refresh_errors_total = %d, want 1", got)
			}
			if got := f.nginx[0].refreshed(); !slices.Equal(got, []string{"192.0.2.1"}) {
				t.Errorf("the working nginx refreshed %q, want [192.0.2.1]", got)
			}
		})
	}
}

func TestReloaded(t *testing.T) {
	f := newRefresherFixture(t, 1)
	f.remember("192.0.2.1", "192.0.2.2", "198.51.100.1")
	deny, _ := decide.ParseList("192.0.2.0/24")
	f.core.SetLists(decide.NewLists(nil, deny, nil))
	f.r.Reloaded(context.Background())
	if got, want := f.nginx[0].refreshed(), []string{"192.0.2.1", "192.0.2.2"}; !slices.Equal(got, want) {
		t.Errorf("after a reload refreshed %q, want the verdicts that changed, %q", got, want)
	}
}

// As a hook of the engine, the refresher refreshes each change before its
// call returns and reports it in the receipt.
func TestHookRefreshesBeforeAnswering(t *testing.T) {
	f := newRefresherFixture(t, 1)
	f.remember("192.0.2.1", "192.0.2.9")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	s := engine.NewLocal(f.core, nil, log, engine.NewMetrics(f.core.Stats, false, func() time.Time { return f.now }))
	s.AddHook(f.r)
	ctx := context.Background()
	steps := []struct {
		name string
		call func() engine.Receipt
		want []string
	}{
		{"failures up to a ban", func() engine.Receipt {
			var r engine.Failed
			for range 3 {
				r, _ = s.Fail(ctx, netip.MustParseAddr("192.0.2.1"), "", f.now)
			}
			return r.Receipt
		}, []string{"192.0.2.1"}},
		{"unban", func() engine.Receipt {
			r, _ := s.Unban(ctx, netip.MustParseAddr("192.0.2.1"), f.now)
			return r.Receipt
		}, []string{"192.0.2.1"}},
		{"range ban", func() engine.Receipt {
			r, _ := s.Ban(ctx, netip.MustParsePrefix("192.0.2.0/24"), time.Hour, "", f.now)
			return r.Receipt
		}, []string{"192.0.2.1", "192.0.2.9"}},
		{"range unban", func() engine.Receipt {
			r, _ := s.Remove(ctx, netip.MustParsePrefix("192.0.2.0/24"), f.now)
			return r.Receipt
		}, []string{"192.0.2.1", "192.0.2.9"}},
	}
	want := []engine.Report{{Name: Report, OK: true}}
	for _, st := range steps {
		r := st.call()
		if got := f.nginx[0].refreshed(); !slices.Equal(got, st.want) {
			t.Errorf("%s: refreshed %q, want %q", st.name, got, st.want)
		}
		if !slices.Equal(r.Reports, want) {
			t.Errorf("%s: receipt %v, want %v", st.name, r.Reports, want)
		}
	}
	f.nginx[0].status = http.StatusNotFound
	r, _ := s.Ban(ctx, netip.MustParsePrefix("192.0.2.9/32"), time.Hour, "", f.now)
	if want := []engine.Report{{Name: Report, OK: false}}; !slices.Equal(r.Reports, want) {
		t.Errorf("refresh failed: receipt %v, want %v", r.Reports, want)
	}
}

// Changes learned from the cluster are refreshed by Run, not before Commit
// returns; the API's own are refreshed once, by the hook.
func TestHookLearned(t *testing.T) {
	f := newRefresherFixture(t, 1)
	f.remember("192.0.2.1", "192.0.2.2")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.r.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	ban := func(ip string) *decide.Ban {
		return &decide.Ban{Key: netip.MustParsePrefix(ip + "/32"), Until: f.now.Add(time.Hour)}
	}
	if r := f.r.Committed(ctx, engine.Change{Source: engine.SourceCluster, Ban: ban("192.0.2.1")}, f.now); len(r.Reports) != 0 {
		t.Errorf("a learned change reported %v, want nothing: no caller waits", r.Reports)
	}
	deadline := time.Now().Add(5 * time.Second)
	var got []string
	for len(got) == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
		got = f.nginx[0].refreshed()
	}
	if !slices.Equal(got, []string{"192.0.2.1"}) {
		t.Errorf("refreshed %q, want [192.0.2.1], the learned change only", got)
	}
}
