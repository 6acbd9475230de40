package notify

import (
	"bytes"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// hits counts the requests a server gets.
type hits struct{ n atomic.Int64 }

func (h *hits) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.n.Add(1)
	w.WriteHeader(http.StatusNoContent)
}

// A receiver that answers with a redirect does not get the events sent
// elsewhere: the redirect is not followed, the batch is refused, counted as
// dropped and logged.
func TestRedirectNotFollowed(t *testing.T) {
	for _, status := range []int{301, 302, 303, 307, 308} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			elsewhere := &hits{}
			other := httptest.NewServer(elsewhere)
			defer other.Close()
			var asked atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				asked.Add(1)
				http.Redirect(w, r, other.URL+"/stolen", status)
			}))
			defer srv.Close()
			var logs bytes.Buffer
			n, st, dropped, _ := newTest(t, srv.URL, Options{Log: slog.New(slog.NewTextHandler(&logs, nil))}, ban(1), ban(2))
			if d := st.next(t); d != time.Second {
				t.Fatalf("wait after the redirect: got %v, want 1s (the interval: no retry)", d)
			}
			if got := elsewhere.n.Load(); got != 0 {
				t.Errorf("the redirect's target got %d requests, want 0", got)
			}
			if got := asked.Load(); got != 1 {
				t.Errorf("receiver got %d requests, want 1", got)
			}
			if dropped.Get() != 2 || n.Queued() != 0 {
				t.Errorf("dropped %d, queued %d; want 2, 0", dropped.Get(), n.Queued())
			}
			if want := fmt.Sprintf("receiver answered %d; redirects are not followed", status); !strings.Contains(logs.String(), want) {
				t.Errorf("log %q lacks %q", logs.String(), want)
			}
		})
	}
}

// With Options.Proxy (DOORMAN_NOTIFY_PROXY) every request goes through it.
func TestProxyOption(t *testing.T) {
	var seen atomic.Value
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		seen.Store(r.Method + " " + r.URL.String() + " " + string(b))
		w.WriteHeader(http.StatusNoContent)
	}))
	defer proxy.Close()
	pu, _ := url.Parse(proxy.URL)
	// receiver.invalid does not resolve: only the proxy can deliver.
	n, st, dropped, _ := newTest(t, "http://receiver.invalid/hook", Options{Proxy: pu}, ban(1))
	st.next(t)
	got, _ := seen.Load().(string)
	if !strings.HasPrefix(got, `POST http://receiver.invalid/hook {"events":[{"type":"ban"`) {
		t.Errorf("proxy saw %q, want the POST to http://receiver.invalid/hook", got)
	}
	if dropped.Get() != 0 || n.Queued() != 0 {
		t.Errorf("dropped %d, queued %d; want 0, 0", dropped.Get(), n.Queued())
	}
}

// HTTP_PROXY and HTTPS_PROXY do not route the events. Go reads those
// variables once per process, at the first request through the default
// proxy function, so the check runs in a child process that has them from
// its start (envProxyChild). Its receivers are at 0.0.0.0, which Linux
// connects to the local host: the proxy function exempts only loopback
// addresses and localhost, so a default client would use the proxy.
func TestEnvProxyIgnored(t *testing.T) {
	if os.Getenv("NOTIFY_TEST_CHILD") == "1" {
		envProxyChild(t)
		return
	}
	proxied := &hits{}
	proxy := httptest.NewServer(proxied)
	defer proxy.Close()
	rec := &receiver{}
	plain := httptest.NewServer(rec)
	defer plain.Close()
	tlsHits := &hits{}
	tls := httptest.NewUnstartedServer(tlsHits)
	tls.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused certificate
	tls.StartTLS()
	defer tls.Close()
	at := func(scheme string, s *httptest.Server) string {
		return fmt.Sprintf("%s://0.0.0.0:%d/hook", scheme, s.Listener.Addr().(*net.TCPAddr).Port)
	}
	for _, k := range []string{"HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"} {
		t.Setenv(k, proxy.URL)
	}
	t.Setenv("NO_PROXY", "")
	t.Setenv("no_proxy", "")
	t.Setenv("NOTIFY_TEST_CHILD", "1")
	t.Setenv("NOTIFY_TEST_HTTP", at("http", plain))
	t.Setenv("NOTIFY_TEST_HTTPS", at("https", tls))
	out, err := exec.Command(os.Args[0], "-test.run=^TestEnvProxyIgnored$", "-test.count=1", "-test.timeout=60s", "-test.v").CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if got := proxied.n.Load(); got != 0 {
		t.Errorf("the proxy of HTTP_PROXY/HTTPS_PROXY got %d requests, want 0\n%s", got, out)
	}
	if got := len(rec.got()); got != 1 {
		t.Errorf("http receiver got %d requests, want 1 (sent directly)\n%s", got, out)
	}
}

// envProxyChild is TestEnvProxyIgnored in the child process.
func envProxyChild(t *testing.T) {
	// Delivered directly.
	n, st, dropped, _ := newTest(t, os.Getenv("NOTIFY_TEST_HTTP"), Options{}, ban(1))
	st.next(t)
	if dropped.Get() != 0 || n.Queued() != 0 {
		t.Errorf("http: dropped %d, queued %d; want 0, 0 (delivered)", dropped.Get(), n.Queued())
	}
	// Tried directly: the test server's certificate is not trusted, so it
	// fails and is retried, but no CONNECT reaches the proxy.
	n, st, _, _ = newTest(t, os.Getenv("NOTIFY_TEST_HTTPS"), Options{}, ban(2))
	st.next(t)
	if n.Queued() != 1 {
		t.Errorf("https: queued %d, want 1 (failed, retrying)", n.Queued())
	}
}
