package lists

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/doorman/doorman/decide"
)

var t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

// source is a feed server whose body, ETag and headers the test sets.
type source struct {
	mu     sync.Mutex
	body   string
	etag   string
	status int
	header map[string]string
	asked  []http.Header
	srv    *httptest.Server
}

func newSource(t *testing.T, body string) *source {
	s := &source{body: body, etag: `"1"`, status: 200}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.asked = append(s.asked, r.Header.Clone())
		for k, v := range s.header {
			w.Header().Set(k, v)
		}
		if s.status != 200 {
			w.WriteHeader(s.status)
			return
		}
		if r.Header.Get("If-None-Match") == s.etag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("ETag", s.etag)
		io.WriteString(w, s.body)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *source) set(body, etag string) {
	s.mu.Lock()
	s.body, s.etag = body, etag
	s.mu.Unlock()
}

func (s *source) last() http.Header {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.asked[len(s.asked)-1]
}

type world struct {
	m     *Manager
	mu    sync.Mutex
	lists *decide.Lists
	sets  int
}

func (w *world) decide(t *testing.T, ip string) decide.Verdict {
	t.Helper()
	w.mu.Lock()
	l := w.lists
	w.mu.Unlock()
	c := decide.New(decide.Policy{MaxFailures: 5, FindTime: time.Minute, BanTime: time.Hour, BanFactor: 1, MaxBanTime: time.Hour, IPv4Prefix: 32, IPv6Prefix: 64}, l, 10, 10)
	return c.Decide(netip.MustParseAddr(ip), t0)
}

func newWorld(t *testing.T, o Options) *world {
	t.Helper()
	w := &world{}
	if o.Static == nil {
		o.Static = func() (decide.Spec, error) { return decide.Spec{}, nil }
	}
	if o.MaxPrefixes == 0 {
		o.MaxPrefixes = 1000
	}
	o.Client = NewClient(5 * time.Second)
	o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	o.Set = func(l *decide.Lists) { w.mu.Lock(); w.lists, w.sets = l, w.sets+1; w.mu.Unlock() }
	m, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	w.m = m
	return w
}

func feedOf(t *testing.T, name, raw string) Feed {
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return Feed{Name: name, URL: u}
}

func lines(n int, format string) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, format+"\n", i/256, i%256)
	}
	return b.String()
}

func now() time.Time { return t0 }

func TestFeedLifecycle(t *testing.T) {
	src := newSource(t, "; drop\n203.0.113.0/24 ; SBL1\n198.51.100.0/24 ; SBL2\n10.0.0.0/8\n")
	dir := t.TempDir()
	w := newWorld(t, Options{Feeds: []Feed{feedOf(t, "spamhaus", src.srv.URL)}, CacheDir: dir,
		Static: func() (decide.Spec, error) {
			return decide.Spec{Never: []netip.Prefix{netip.MustParsePrefix("203.0.113.9/32")}}, nil
		}})
	ctx := context.Background()
	if v := w.decide(t, "203.0.113.1"); !v.Allow {
		t.Fatalf("before the first fetch: %v, want allow", v.Reason)
	}
	w.m.Refresh(ctx, now)
	check := func(ip string, allow bool, reason decide.Reason, name string) {
		t.Helper()
		v := w.decide(t, ip)
		if v.Allow != allow || v.Reason != reason || v.Source != name {
			t.Errorf("%s: %v/%v/%q, want %v/%v/%q", ip, v.Allow, v.Reason, v.Source, allow, reason, name)
		}
	}
	check("203.0.113.1", false, decide.Feed, "spamhaus")
	check("203.0.113.9", true, decide.Allowed, "") // never-ban
	check("10.1.2.3", true, decide.Allowed, "")    // private: skipped
	st := w.m.Feeds()[0]
	if st.Prefixes != 2 || st.Skipped.Local != 1 || st.LastError != "" {
		t.Errorf("status = %+v, want 2 prefixes, 1 local skipped, no error", st)
	}

	t.Run("conditional", func(t *testing.T) {
		sets := w.sets
		w.m.Refresh(ctx, now)
		if got := src.last().Get("If-None-Match"); got != `"1"` {
			t.Errorf("If-None-Match = %q, want the ETag held", got)
		}
		if w.sets != sets {
			t.Errorf("a 304 rebuilt the lists")
		}
	})
	t.Run("error keeps the copy", func(t *testing.T) {
		src.mu.Lock()
		src.status = 503
		src.mu.Unlock()
		w.m.Refresh(ctx, now)
		check("203.0.113.1", false, decide.Feed, "spamhaus")
		if st := w.m.Feeds()[0]; st.LastError == "" || st.Failures != 1 {
			t.Errorf("status = %+v, want the error reported", st)
		}
		src.mu.Lock()
		src.status = 200
		src.mu.Unlock()
	})
	t.Run("html page keeps the copy", func(t *testing.T) {
		src.set("<html>\n<body>\nSorry, rate limited\n</body>\n</html>\n", `"2"`)
		w.m.Refresh(ctx, now)
		check("203.0.113.1", false, decide.Feed, "spamhaus")
	})
	t.Run("shrink by more than half keeps the copy", func(t *testing.T) {
		src.set(lines(100, "192.0.%d.%d"), `"3"`)
		w.m.Refresh(ctx, now)
		check("192.0.0.50", false, decide.Feed, "spamhaus")
		src.set(lines(49, "192.0.%d.%d"), `"4"`)
		w.m.Refresh(ctx, now)
		check("192.0.0.50", false, decide.Feed, "spamhaus")
		if st := w.m.Feeds()[0]; st.Prefixes != 100 || !strings.Contains(st.LastError, "shrank") {
			t.Errorf("status = %+v, want 100 prefixes kept and the shrink reported", st)
		}
		src.set(lines(50, "192.0.%d.%d"), `"5"`) // exactly half: accepted
		w.m.Refresh(ctx, now)
		check("192.0.0.50", true, decide.Allowed, "")
	})
	t.Run("an authoritative feed may shrink", func(t *testing.T) {
		src.mu.Lock()
		src.header = map[string]string{AuthoritativeHeader: "bans"}
		src.mu.Unlock()
		src.set("192.0.2.1\n", `"6"`)
		w.m.Refresh(ctx, now)
		check("192.0.0.1", true, decide.Allowed, "")
		check("192.0.2.1", false, decide.Feed, "spamhaus")
		src.set("", `"7"`)
		w.m.Refresh(ctx, now)
		check("192.0.2.1", true, decide.Allowed, "")
		src.set("192.0.2.1\n", `"8"`)
		w.m.Refresh(ctx, now)
	})
	t.Run("restart without network denies from the copy on disk", func(t *testing.T) {
		src.srv.Close()
		w2 := newWorld(t, Options{Feeds: []Feed{feedOf(t, "spamhaus", src.srv.URL)}, CacheDir: dir})
		v := w2.decide(t, "192.0.2.1")
		if v.Allow || v.Source != "spamhaus" {
			t.Errorf("after restart: %v/%q, want denied by spamhaus", v.Reason, v.Source)
		}
		w2.m.Refresh(ctx, now)
		if v := w2.decide(t, "192.0.2.1"); v.Allow {
			t.Errorf("a failed fetch dropped the cached copy")
		}
	})
}

func TestFeedsBudgetAndFiles(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.txt")
	b := filepath.Join(dir, "b.txt")
	os.WriteFile(a, []byte(lines(6, "192.0.%d.%d")), 0o600)
	os.WriteFile(b, []byte(lines(6, "198.51.%d.%d")), 0o600)
	w := newWorld(t, Options{MaxPrefixes: 8, Feeds: []Feed{feedOf(t, "a", "file://"+a), feedOf(t, "b", "file://"+b)}})
	w.m.Refresh(context.Background(), now)
	st := w.m.Feeds()
	if st[0].Prefixes != 6 || st[1].Prefixes != 2 || st[1].Cut != 4 {
		t.Fatalf("status = %+v, want a 6, b 2 (4 cut)", st)
	}
	if v := w.decide(t, "198.51.0.1"); v.Source != "b" {
		t.Errorf("198.51.0.1: %q, want b", v.Source)
	}
	if v := w.decide(t, "198.51.0.5"); !v.Allow {
		t.Errorf("198.51.0.5 beyond the budget is denied")
	}
	sets := w.sets
	w.m.Refresh(context.Background(), now)
	if w.sets != sets {
		t.Errorf("unchanged files rebuilt the lists")
	}
	os.WriteFile(a, []byte("192.0.2.200\n192.0.2.201\n192.0.2.202\n192.0.2.203\n"), 0o600)
	w.m.Refresh(context.Background(), now)
	if v := w.decide(t, "198.51.0.3"); v.Source != "b" {
		t.Errorf("after a shrank: 198.51.0.3 %q, want b (budget freed)", v.Source)
	}
}

func TestFeedToken(t *testing.T) {
	src := newSource(t, "192.0.2.1\n")
	f := feedOf(t, "peer", src.srv.URL)
	f.Token = "s3cret"
	w := newWorld(t, Options{Feeds: []Feed{f}})
	w.m.Refresh(context.Background(), now)
	if got := src.last().Get("Authorization"); got != "Bearer s3cret" {
		t.Errorf("Authorization = %q", got)
	}
}
