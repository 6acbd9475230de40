package notify

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// steps is a Sleep that the test drives: each call hands its duration to the
// test and returns when the test has taken it, so the sender's schedule is
// observed one wait at a time, with no clock.
type steps struct {
	ch    chan time.Duration
	calls atomic.Int64 // Sleep calls begun
}

func newSteps() *steps { return &steps{ch: make(chan time.Duration)} }

func (s *steps) sleep(ctx context.Context, d time.Duration) bool {
	s.calls.Add(1)
	select {
	case s.ch <- d:
		return true
	case <-ctx.Done():
		return false
	}
}

// next waits for the sender's next Sleep and returns its duration.
func (s *steps) next(t *testing.T) time.Duration {
	t.Helper()
	select {
	case d := <-s.ch:
		return d
	case <-time.After(10 * time.Second):
		t.Fatal("the sender did not wait again within 10 s")
		return 0
	}
}

// receiver records request bodies; answer decides each status.
type receiver struct {
	mu     sync.Mutex
	bodies []string
	answer func(n int) int // n: 1 for the first request
	steps  *steps          // when set, the Sleep calls begun before each request go to waited
	waited []int64
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	b, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	r.bodies = append(r.bodies, string(b))
	if r.steps != nil {
		r.waited = append(r.waited, r.steps.calls.Load())
	}
	n := len(r.bodies)
	r.mu.Unlock()
	status := http.StatusOK
	if r.answer != nil {
		status = r.answer(n)
	}
	w.WriteHeader(status)
}

func (r *receiver) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.bodies...)
}

type batch struct {
	Events []map[string]any `json:"events"`
}

func decode(t *testing.T, body string) batch {
	t.Helper()
	var b batch
	if err := json.Unmarshal([]byte(body), &b); err != nil {
		t.Fatalf("body %q: %v", body, err)
	}
	return b
}

// newTest starts a Notifier driven by steps, with queued already sent
// before Run starts.
func newTest(t *testing.T, url string, o Options, queued ...Event) (*Notifier, *steps, *metrics.Counter, func()) {
	t.Helper()
	return newTestSteps(t, newSteps(), url, o, queued...)
}

func newTestSteps(t *testing.T, st *steps, url string, o Options, queued ...Event) (*Notifier, *steps, *metrics.Counter, func()) {
	t.Helper()
	o.URL = url
	o.Host = "front-1"
	o.Dropped = metrics.NewSet().NewCounter("doorman_notify_dropped_total")
	o.Sleep = st.sleep
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Second
	}
	n, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range queued {
		n.Send(e)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { n.Run(ctx); close(done) }()
	stop := func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return within 10 s of cancel")
		}
	}
	t.Cleanup(stop)
	return n, st, o.Dropped, stop
}

func ban(i int) Event {
	return Event{Type: "ban", Key: fmt.Sprintf("203.0.113.%d/32", i%256), Until: "2026-11-28T11:45:12Z", Reason: "failures", Count: 1, Source: "failures"}
}

func TestJSONShape(t *testing.T) {
	rec := &receiver{}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	_, st, dropped, _ := newTest(t, srv.URL, Options{},
		Event{Type: "ban", Key: "203.0.113.7/32", Until: "2026-11-28T11:45:12Z", Reason: "failures", Count: 3, Source: "failures"},
		Event{Type: "unban", Key: "203.0.113.7/32", Reason: "failures", Count: 3, Source: "manual"})
	if d := st.next(t); d != time.Second {
		t.Fatalf("wait after a request: got %v, want 1s", d)
	}
	got := rec.got()
	if len(got) != 1 {
		t.Fatalf("requests: got %d, want 1 batch; bodies %q", len(got), got)
	}
	want := `{"events":[` +
		`{"type":"ban","key":"203.0.113.7/32","until":"2026-11-28T11:45:12Z","reason":"failures","count":3,"source":"failures","host":"front-1"},` +
		`{"type":"unban","key":"203.0.113.7/32","reason":"failures","count":3,"source":"manual","host":"front-1"}]}`
	if got[0] != want {
		t.Errorf("body:\n got %s\nwant %s", got[0], want)
	}
	if dropped.Get() != 0 {
		t.Errorf("dropped: got %d, want 0", dropped.Get())
	}
}

func TestSlackFormat(t *testing.T) {
	rec := &receiver{}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	n, st, _, _ := newTest(t, srv.URL, Options{Format: FormatSlack})
	n.Send(Event{Type: "range_ban", Key: "198.51.100.0/24", Until: "2026-11-28T11:45:12Z", Reason: "manual", Count: 1, Source: "manual"})
	st.next(t)
	var body map[string]string
	if err := json.Unmarshal([]byte(rec.got()[0]), &body); err != nil {
		t.Fatal(err)
	}
	want := "doorman on front-1: range ban `198.51.100.0/24` until 2026-11-28T11:45:12Z (reason `manual`, ban #1, by manual)"
	if len(body) != 1 || body["text"] != want {
		t.Errorf("slack body: got %q, want {\"text\": %q}", body, want)
	}
}

func TestSlackText(t *testing.T) {
	var many []Event
	for i := range 25 {
		many = append(many, Event{Type: "unban", Key: fmt.Sprint(i), Host: "h"})
	}
	for _, tc := range []struct {
		name  string
		batch []Event
		want  string
	}{
		{"escaped", []Event{{Type: "ban", Key: "10.0.0.0/8", Reason: "<!channel> & co", Host: "a<b>"}},
			"doorman on a&lt;b&gt;: ban `10.0.0.0/8` (reason `&lt;!channel&gt; &amp; co`)"},
		{"lock", []Event{{Type: "lock", Key: "admin", Until: "2026-01-01T00:00:00Z", Source: "failures", Host: "h"}},
			"doorman on h: lock `admin` until 2026-01-01T00:00:00Z (by failures)"},
		{"long batch", many, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := SlackText(tc.batch)
			if tc.want != "" && got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
			if tc.name == "long batch" {
				lines := strings.Split(got, "\n")
				if len(lines) != slackLines+1 || !strings.HasSuffix(got, "… and 5 more") {
					t.Errorf("got %d lines ending %q, want %d lines and the rest counted", len(lines), lines[len(lines)-1], slackLines+1)
				}
			}
		})
	}
}

// At most one request per Interval: every request is followed by a wait of
// Interval before the next, and batches keep the order of Send.
func TestBatchedAndPaced(t *testing.T) {
	st := newSteps()
	rec := &receiver{steps: st}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	var events []Event
	for i := range 250 {
		events = append(events, Event{Type: "ban", Key: fmt.Sprint(i)})
	}
	n, _, _, _ := newTestSteps(t, st, srv.URL, Options{MaxBatch: 100}, events...)
	for req := 1; req <= 3; req++ {
		if d := st.next(t); d != time.Second {
			t.Fatalf("wait after request %d: got %v, want 1s", req, d)
		}
	}
	rec.mu.Lock()
	if fmt.Sprint(rec.waited) != "[0 1 2]" {
		t.Errorf("waits begun before each request: got %v, want [0 1 2] (one request per interval)", rec.waited)
	}
	rec.mu.Unlock()
	next := 0
	for i, body := range rec.got() {
		b := decode(t, body)
		if want := []int{100, 100, 50}[i]; len(b.Events) != want {
			t.Errorf("request %d: %d events, want %d", i+1, len(b.Events), want)
		}
		for _, e := range b.Events {
			if e["key"] != fmt.Sprint(next) {
				t.Fatalf("request %d: event %v, want key %d (order kept)", i+1, e["key"], next)
			}
			next++
		}
	}
	if n.Queued() != 0 {
		t.Errorf("queued after delivery: %d, want 0", n.Queued())
	}
}

// 5xx, 429 and 408 are retried with the same events and a doubling wait;
// nothing is lost or sent twice once the receiver recovers.
func TestRetryWithBackoff(t *testing.T) {
	for _, status := range []int{500, 503, 429, 408} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			rec := &receiver{answer: func(n int) int {
				if n <= 4 {
					return status
				}
				return 200
			}}
			srv := httptest.NewServer(rec)
			defer srv.Close()
			n, st, dropped, _ := newTest(t, srv.URL, Options{MaxBackoff: 4 * time.Second}, ban(1), ban(2))
			var waits []time.Duration
			for range 5 {
				waits = append(waits, st.next(t))
			}
			if want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second, time.Second}; fmt.Sprint(waits) != fmt.Sprint(want) {
				t.Errorf("waits: got %v, want %v (backoff capped at MaxBackoff, then the interval)", waits, want)
			}
			got := rec.got()
			if len(got) != 5 {
				t.Fatalf("requests: got %d, want 5", len(got))
			}
			for i, body := range got {
				if body != got[0] {
					t.Errorf("request %d differs from the first: %s", i+1, body)
				}
			}
			if dropped.Get() != 0 || n.Queued() != 0 {
				t.Errorf("dropped %d, queued %d; want 0, 0", dropped.Get(), n.Queued())
			}
		})
	}
}

// Any other answer is final: the batch is dropped and counted, and the next
// batch goes on.
func TestRefusedDropped(t *testing.T) {
	rec := &receiver{answer: func(n int) int {
		if n == 1 {
			return http.StatusBadRequest
		}
		return http.StatusNoContent
	}}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	n, st, dropped, _ := newTest(t, srv.URL, Options{MaxBatch: 2}, ban(0), ban(1), ban(2))
	st.next(t)
	st.next(t)
	if got := len(rec.got()); got != 2 {
		t.Fatalf("requests: got %d, want 2", got)
	}
	if dropped.Get() != 2 || n.Queued() != 0 {
		t.Errorf("dropped %d, queued %d; want 2 (the refused batch), 0", dropped.Get(), n.Queued())
	}
}

// sendAll calls Send n times from several goroutines and fails the test if
// they do not all return within 10 s: Send must not wait on the receiver.
func sendAll(t *testing.T, n *Notifier, count int) {
	t.Helper()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := g; i < count; i += 4 {
				n.Send(ban(i))
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Send blocked")
	}
}

// The receiver is down (connection refused): Send never waits, the queue
// holds QueueSize events and the rest are counted as dropped; the sender
// keeps retrying with capped backoff.
func TestReceiverDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String() + "/hook"
	ln.Close()
	n, st, dropped, _ := newTest(t, url, Options{})
	sendAll(t, n, 25000)
	if n.Queued() != DefaultQueueSize || dropped.Get() != 25000-DefaultQueueSize {
		t.Errorf("queued %d, dropped %d; want %d, %d", n.Queued(), dropped.Get(), DefaultQueueSize, 25000-DefaultQueueSize)
	}
	var waits []time.Duration
	for range 8 {
		waits = append(waits, st.next(t))
	}
	want := []time.Duration{1, 2, 4, 8, 16, 32, 60, 60}
	for i := range want {
		want[i] *= time.Second
	}
	if fmt.Sprint(waits) != fmt.Sprint(want) {
		t.Errorf("waits: got %v, want %v", waits, want)
	}
	sendAll(t, n, 100)
	if n.Queued() != DefaultQueueSize {
		t.Errorf("queued %d, want %d", n.Queued(), DefaultQueueSize)
	}
}

// A receiver that accepts and never answers: each request ends at the
// client's timeout and is retried; meanwhile Send goes on at once and the
// queue stays bounded.
func TestReceiverSlow(t *testing.T) {
	release := make(chan struct{})
	var inFlight sync.WaitGroup
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inFlight.Add(1)
		defer inFlight.Done()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer func() { close(release); srv.Close() }()
	n, st, dropped, stop := newTest(t, srv.URL, Options{QueueSize: 500, Timeout: 200 * time.Millisecond})
	n.Send(ban(0))
	sendAll(t, n, 2000) // while the first request hangs
	if n.Queued() != 500 || dropped.Get() != 1501 {
		t.Errorf("queued %d, dropped %d; want 500, 1501", n.Queued(), dropped.Get())
	}
	if d := st.next(t); d != time.Second {
		t.Errorf("wait after the timed-out request: got %v, want 1s (a retry)", d)
	}
	stop()
}

// Cancelling Run makes one last attempt for what is queued.
func TestFlushOnStop(t *testing.T) {
	rec := &receiver{}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	n, st, _, stop := newTest(t, srv.URL, Options{})
	n.Send(ban(1))
	st.next(t) // the first batch went; Run now waits the interval
	n.Send(ban(2))
	stop()
	got := rec.got()
	if len(got) != 2 || len(decode(t, got[1]).Events) != 1 {
		t.Fatalf("requests %q, want the second event sent at stop", got)
	}
	if n.Queued() != 0 {
		t.Errorf("queued after stop: %d", n.Queued())
	}
}

func TestNewErrors(t *testing.T) {
	c := metrics.NewSet().NewCounter("x")
	for _, tc := range []struct {
		name string
		o    Options
		want string
	}{
		{"no scheme", Options{URL: "hooks.example/x", Dropped: c}, `notify: Options.URL "hooks.example/x" is not an http:// or https:// URL`},
		{"ftp", Options{URL: "ftp://h/x", Dropped: c}, `notify: Options.URL "ftp://h/…" is not`},
		{"no host", Options{URL: "http:///x", Dropped: c}, `notify: Options.URL "http:///x" is not`},
		{"format", Options{URL: "http://h/x", Format: "xml", Dropped: c}, `notify: Options.Format "xml" is not json or slack`},
		{"proxy", Options{URL: "http://h/x", Proxy: &url.URL{Scheme: "socks5", User: url.UserPassword("u", "secret"), Host: "p:1080"}, Dropped: c}, `notify: Options.Proxy "socks5://p:1080/…" is not`},
		{"secret in path hidden", Options{URL: "gopher://hooks.slack.example/services/T0/B0/secret", Dropped: c}, `"gopher://hooks.slack.example/…"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Errorf("error shows the URL's secret: %v", err)
			}
		})
	}
	if _, err := New(Options{URL: "https://h/x", Format: "slack", Dropped: c}); err != nil {
		t.Errorf("valid options: %v", err)
	}
}
