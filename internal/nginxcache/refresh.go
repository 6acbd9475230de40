package nginxcache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/engine"
	"github.com/doorman/doorman/internal/throttle"
)

const (
	// refreshTimeout bounds one refresh request: nginx answers from doorman
	// over loopback in well under a millisecond, and the API call waits.
	refreshTimeout = 2 * time.Second
	// refreshWorkers is how many refresh requests are in flight at once.
	refreshWorkers = 16
	// learnedQueue is how many changes learned from elsewhere wait for their
	// refresh; beyond it they are dropped and counted as failed refreshes.
	learnedQueue = 4096
)

// Refresher asks every nginx in front of doorman to replace the verdicts it
// may keep inside a changed prefix: GET on each refresh URL with the key in
// X-Doorman-Refresh. It is safe for concurrent use.
type Refresher struct {
	urls    []string
	set     *Set
	client  *http.Client
	now     func() time.Time
	log     *slog.Logger
	verdict func(netip.Addr, time.Time) decide.Verdict
	grace   time.Time // see RefresherOptions.TTL
	sent    *metrics.Counter
	errors  *metrics.Counter
	learned engine.LearnedKeys

	warn *throttle.Throttle // failure lines: one a second
}

// RefresherOptions configure a Refresher.
type RefresherOptions struct {
	URLs []string // DOORMAN_NGINX_REFRESH_URLS
	Set  *Set     // what the decision handler let nginx keep
	// TTL is DOORMAN_CACHE_TTL. For TTL (plus Margin) after the start, nginx
	// may still keep verdicts of the previous doorman process, which this one
	// never remembered: the address named by each change is refreshed then
	// even when not remembered.
	TTL     time.Duration
	Verdict func(a netip.Addr, now time.Time) decide.Verdict // for list reloads
	Metrics *metrics.Set
	Log     *slog.Logger
	Now     func() time.Time
}

// NewRefresher registers the metrics doorman_cache_refreshes_total,
// doorman_cache_refresh_errors_total and doorman_cache_tracked.
func NewRefresher(o RefresherOptions) *Refresher {
	r := &Refresher{urls: o.URLs, warn: throttle.New(time.Second), set: o.Set, now: o.Now, log: o.Log, verdict: o.Verdict,
		grace:   o.Now().Add(o.TTL + Margin),
		learned: engine.NewLearnedKeys(learnedQueue),
		client: &http.Client{Transport: &http.Transport{
			Proxy:               nil, // the refresh URLs are nginx's own, never reached through a proxy
			MaxIdleConnsPerHost: refreshWorkers,
			IdleConnTimeout:     30 * time.Second,
		}},
	}
	r.sent = o.Metrics.NewCounter("doorman_cache_refreshes_total")
	r.errors = o.Metrics.NewCounter("doorman_cache_refresh_errors_total")
	o.Metrics.NewGauge("doorman_cache_tracked", func() float64 { return float64(o.Set.Len(o.Now())) })
	return r
}

// Refresh replaces, in every nginx, the verdicts it may keep for addresses
// inside the changed prefixes, and for the addresses named by the change
// while the start's grace lasts. The changes must be in force. It returns
// once every refresh has succeeded or failed: true when all succeeded (or
// none was needed).
func (r *Refresher) Refresh(ctx context.Context, changed []netip.Prefix, named ...netip.Addr) bool {
	r.set.Change()
	now := r.now()
	var keys []Key
	for _, p := range changed {
		keys = r.set.In(p, now, keys)
	}
	if now.Before(r.grace) {
		for _, a := range named {
			a = decide.Clean(a)
			if !a.IsValid() {
				continue
			}
			k := KeyOf(a)
			keys = append(keys, k)
			if k.is4 {
				k.is4 = false
				keys = append(keys, k)
			}
		}
	}
	return r.send(ctx, keys)
}

// Reloaded refreshes the verdicts whose outcome differs under the lists now
// in force from the one nginx was let keep. Call it after swapping the lists.
func (r *Refresher) Reloaded(ctx context.Context) bool {
	r.set.Change()
	now := r.now()
	var keys []Key
	r.set.Range(now, func(k Key, was decide.Reason) {
		if r.verdict(k.Addr(), now).Reason != was {
			keys = append(keys, k)
		}
	})
	ok := r.send(ctx, keys)
	r.log.Info("nginx caches refreshed after the reload", "changed", len(keys), "ok", ok)
	return ok
}

// Run refreshes the changes Committed queued, until ctx ends.
func (r *Refresher) Run(ctx context.Context) {
	for {
		var batch []netip.Prefix
		select {
		case <-ctx.Done():
			return
		case p := <-r.learned:
			batch = r.learned.Batch(p, 256)
		}
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		r.Refresh(c, batch)
		cancel()
	}
}

// send refreshes every key on every URL, refreshWorkers at a time.
func (r *Refresher) send(ctx context.Context, keys []Key) bool {
	if len(keys) == 0 {
		return true
	}
	if len(keys) > 1 {
		seen := make(map[Key]bool, len(keys))
		n := 0
		for _, k := range keys {
			if !seen[k] {
				seen[k] = true
				keys[n] = k
				n++
			}
		}
		keys = keys[:n]
	}
	type job struct {
		url string
		key Key
	}
	jobs := make(chan job)
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := true
	for range min(refreshWorkers, len(keys)*len(r.urls)) {
		wg.Go(func() {
			for j := range jobs {
				if err := r.one(ctx, j.url, j.key); err != nil {
					r.failed(j.url, j.key, err)
					mu.Lock()
					ok = false
					mu.Unlock()
				}
			}
		})
	}
	for _, k := range keys {
		for _, u := range r.urls {
			jobs <- job{u, k}
		}
	}
	close(jobs)
	wg.Wait()
	return ok
}

// one asks the nginx at url to re-ask doorman about k. Success is doorman's
// answer passed through: 204 or 403 with X-Doorman-Verdict. nginx's own 403
// (the caller is not allowed), 404 (no refresh location) or 5xx (doorman
// unreachable from nginx) carry no X-Doorman-Verdict.
func (r *Refresher) one(ctx context.Context, url string, k Key) error {
	r.sent.Inc()
	c, cancel := context.WithTimeout(ctx, refreshTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(c, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("X-Doorman-Refresh", k.String())
	resp, err := r.client.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10)) // keep the connection
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusForbidden || resp.Header.Get("X-Doorman-Verdict") == "" {
		return fmt.Errorf("answer %d without doorman's verdict: is the refresh location in place, and open to doorman's address?", resp.StatusCode)
	}
	return nil
}

// failed counts a failed refresh and logs it, at most once a second with the
// number not logged since: with an nginx down, every change fails.
func (r *Refresher) failed(url string, k Key, err error) {
	r.errors.Inc()
	skipped, ok := r.warn.Allow("refresh", r.now())
	if !ok {
		return
	}
	attrs := []any{"err", err, "since_last_logged", skipped}
	if url != "" {
		attrs = append([]any{"url", url, "ip", k.String()}, attrs...)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		attrs = append(attrs, "timeout", refreshTimeout)
	}
	r.log.Warn("nginx cache refresh failed: that nginx may serve the old verdict until it expires", attrs...)
}
