// Package notify posts ban-state changes (bans, unbans, range bans, account
// locks) to a webhook, DOORMAN_NOTIFY_URL, as JSON or as a Slack-style
// {"text":…} message.
//
// Invariants:
//   - Send never blocks and never does I/O: it appends to a bounded queue
//     (QueueSize events, 10,000 by default) under a mutex and returns. When
//     the queue is full the new event is dropped and counted, so a dead or
//     slow receiver costs memory bounded by the queue and nothing else.
//   - One goroutine (Run) sends: at most one request per Interval (1 s), each
//     carrying up to MaxBatch queued events in the order they were sent. A
//     failed request (network error, timeout, 408, 429, 5xx) is retried with
//     the same events, waiting 1 s, 2 s, 4 s … up to MaxBackoff between tries;
//     any other answer is final and its events are dropped and counted.
//   - Waiting goes through Sleep, so tests drive the schedule without a clock.
//   - Events go to URL and nowhere else: no redirect is followed (a 3xx
//     answer is a refusal) and no proxy is used but Proxy; HTTP_PROXY and
//     HTTPS_PROXY are ignored.
//
// A Notifier is safe for concurrent use.
package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/doorman/doorman/internal/engine"
	"github.com/doorman/doorman/internal/throttle"
)

// Defaults of Options.
const (
	DefaultQueueSize  = 10000
	DefaultInterval   = time.Second
	DefaultMaxBatch   = 500
	DefaultMaxBackoff = time.Minute
	DefaultTimeout    = 10 * time.Second
)

// Formats of the request body.
const (
	FormatJSON  = "json"
	FormatSlack = "slack"
)

// Event is one change as the receiver sees it. In the json format a batch is
// {"events":[Event…]}.
type Event struct {
	Type   string `json:"type"` // ban, unban, range_ban, range_unban, lock, unlock
	Key    string `json:"key"`
	Until  string `json:"until,omitempty"` // RFC 3339; bans and locks
	Reason string `json:"reason"`
	Count  int    `json:"count"`
	Source string `json:"source"` // failures, manual or cluster
	Host   string `json:"host"`   // set by the Notifier
}

// Options configure a Notifier. URL and Dropped are required.
type Options struct {
	URL     string
	Format  string   // FormatJSON (default) or FormatSlack
	Proxy   *url.URL // DOORMAN_NOTIFY_PROXY; nil: connect to URL directly
	Host    string   // this instance, in every event
	Dropped *metrics.Counter
	Log     *slog.Logger // nil: no logs

	Timeout    time.Duration // of one request; 0: DefaultTimeout
	QueueSize  int
	Interval   time.Duration // least time between two requests
	MaxBatch   int
	MaxBackoff time.Duration
	// Sleep waits d or until ctx ends, reporting false when ctx ended first;
	// nil: a timer.
	Sleep func(ctx context.Context, d time.Duration) bool
	// Now stamps the rate-limited error log; nil: time.Now.
	Now func() time.Time
}

// Notifier queues events and posts them from Run.
type Notifier struct {
	o      Options
	client *http.Client
	wake   chan struct{} // one token: the queue became non-empty

	mu    sync.Mutex
	queue []Event // FIFO; len ≤ QueueSize
	head  int     // queue[head:] are waiting

	warn *throttle.Throttle // delivery errors: one line a minute
}

// New checks the options and returns a Notifier; call Run to start sending.
// The variables behind URL, Format and Proxy are checked by config.Validate,
// before any file is opened; these checks catch a caller's mistake.
func New(o Options) (*Notifier, error) {
	if _, err := ParseURL(o.URL); err != nil {
		return nil, fmt.Errorf("notify: Options.URL %q %v", Redact(o.URL), err)
	}
	switch o.Format {
	case "":
		o.Format = FormatJSON
	case FormatJSON, FormatSlack:
	default:
		return nil, fmt.Errorf("notify: Options.Format %q is not json or slack", o.Format)
	}
	if o.Proxy != nil {
		if _, err := ParseURL(o.Proxy.String()); err != nil {
			return nil, fmt.Errorf("notify: Options.Proxy %q %v", Redact(o.Proxy.String()), err)
		}
	}
	if o.Dropped == nil {
		return nil, errors.New("notify: Options.Dropped is nil")
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.QueueSize <= 0 {
		o.QueueSize = DefaultQueueSize
	}
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = DefaultMaxBatch
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = DefaultMaxBackoff
	}
	if o.Sleep == nil {
		o.Sleep = sleep
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return &Notifier{o: o, client: newClient(o.Proxy, o.Timeout), wake: make(chan struct{}, 1), warn: throttle.New(time.Minute)}, nil
}

// newClient returns the client of the notifications. Go's default client
// would follow redirects, re-sending the POST and its body to wherever the
// receiver (or anyone who can answer for it) points, and would honour
// HTTP_PROXY and HTTPS_PROXY, so the process's environment could route the
// events through a host nobody configured for them. So: no redirects (a 3xx
// answer is returned as it is and refused by post) and no proxy but the one
// DOORMAN_NOTIFY_PROXY names.
func newClient(proxy *url.URL, timeout time.Duration) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil
	if proxy != nil {
		t.Proxy = http.ProxyURL(proxy)
	}
	return &http.Client{
		Transport:     t,
		Timeout:       timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// ParseURL parses an absolute http or https URL with a host: what
// DOORMAN_NOTIFY_URL and DOORMAN_NOTIFY_PROXY must be (config.Validate
// checks them with it).
func ParseURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errors.New("is not an http:// or https:// URL")
	}
	return u, nil
}

// Redact keeps a URL's scheme and host and hides the rest: its user,
// password, path and query (Slack puts its secret in the path). What cannot
// be parsed as a URL is cut after 16 bytes.
func Redact(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		if len(s) > 16 {
			return s[:16] + "…"
		}
		return s
	}
	return u.Scheme + "://" + u.Host + "/…"
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Send queues e without waiting. A full queue drops e and counts it.
func (n *Notifier) Send(e Event) {
	e.Host = n.o.Host
	n.mu.Lock()
	if len(n.queue)-n.head >= n.o.QueueSize {
		n.mu.Unlock()
		n.o.Dropped.Inc()
		return
	}
	if n.head > 0 && len(n.queue) == cap(n.queue) {
		// Reuse the sent prefix instead of growing: memory stays at QueueSize.
		k := copy(n.queue, n.queue[n.head:])
		clear(n.queue[k:])
		n.queue, n.head = n.queue[:k], 0
	}
	n.queue = append(n.queue, e)
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// Queued returns the number of events waiting.
func (n *Notifier) Queued() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.queue) - n.head
}

// peek returns up to MaxBatch waiting events, oldest first, without removing them.
func (n *Notifier) peek() []Event {
	n.mu.Lock()
	defer n.mu.Unlock()
	k := min(len(n.queue)-n.head, n.o.MaxBatch)
	return append([]Event(nil), n.queue[n.head:n.head+k]...)
}

// done removes the k oldest events, sent or given up.
func (n *Notifier) done(k int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	clear(n.queue[n.head : n.head+k])
	n.head += k
	if n.head == len(n.queue) {
		n.queue, n.head = n.queue[:0], 0
	}
}

// Run sends queued events until ctx ends, then makes one last attempt, of at
// most 2 s, for the events still queued.
func (n *Notifier) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			n.flush()
			return
		case <-n.wake:
		}
		for n.Queued() > 0 {
			if !n.sendBatch(ctx) {
				n.flush()
				return
			}
			if !n.o.Sleep(ctx, n.o.Interval) {
				n.flush()
				return
			}
		}
	}
}

// sendBatch posts the oldest waiting events until they are delivered or
// refused; it reports false when ctx ended first (the events stay queued).
func (n *Notifier) sendBatch(ctx context.Context) bool {
	batch := n.peek()
	body, err := n.encode(batch)
	if err != nil { // cannot happen for these types; never retry it
		n.giveUp(batch, err)
		return true
	}
	backoff := time.Second
	for {
		err := n.post(ctx, body)
		if err == nil {
			n.done(len(batch))
			return true
		}
		var perm *permanentError
		if errors.As(err, &perm) {
			n.giveUp(batch, err)
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		n.logError("notification failed; retrying", err, len(batch), backoff)
		if !n.o.Sleep(ctx, backoff) {
			return false
		}
		backoff = min(2*backoff, n.o.MaxBackoff)
	}
}

func (n *Notifier) giveUp(batch []Event, err error) {
	n.o.Dropped.Add(len(batch))
	n.done(len(batch))
	n.logError("notification refused; events dropped", err, len(batch), 0)
}

// flush makes one attempt, without retry, for one batch still queued.
func (n *Notifier) flush() {
	if n.Queued() == 0 {
		return
	}
	batch := n.peek()
	body, err := n.encode(batch)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err = n.post(ctx, body)
		cancel()
	}
	if err != nil {
		n.o.Log.Warn("notification not sent at shutdown", "events", n.Queued(), "err", err)
		return
	}
	n.done(len(batch))
	if left := n.Queued(); left > 0 {
		n.o.Log.Warn("notifications not sent at shutdown", "events", left)
	}
}

// permanentError is an outcome that retrying will not change.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }

func (n *Notifier) post(ctx context.Context, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.o.URL, bytes.NewReader(body))
	if err != nil {
		return &permanentError{err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "doorman")
	resp, err := n.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL may carry a secret (Slack's path)
		}
		return err
	}
	// Read a little of the body so the connection can be reused.
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
	switch s := resp.StatusCode; {
	case s >= 200 && s < 300:
		return nil
	case s == http.StatusRequestTimeout, s == http.StatusTooManyRequests, s >= 500:
		return fmt.Errorf("receiver answered %d", s)
	case s >= 300 && s < 400:
		return &permanentError{fmt.Errorf("receiver answered %d; redirects are not followed", s)}
	default:
		return &permanentError{fmt.Errorf("receiver answered %d", s)}
	}
}

// logError logs at warn level at most once a minute, with the number of
// errors not logged since: a receiver that is down fails every retry.
func (n *Notifier) logError(msg string, err error, events int, retryIn time.Duration) {
	skipped, ok := n.warn.Allow("delivery", n.o.Now())
	if !ok {
		return
	}
	attrs := []any{"url", Redact(n.o.URL), "err", err, "events", events, "queued", n.Queued(), "since_last_logged", skipped}
	if retryIn > 0 {
		attrs = append(attrs, "retry_in", retryIn.String())
	}
	n.o.Log.Warn(msg, attrs...)
}

func (n *Notifier) encode(batch []Event) ([]byte, error) {
	if n.o.Format == FormatSlack {
		return json.Marshal(map[string]string{"text": SlackText(batch)})
	}
	return json.Marshal(struct {
		Events []Event `json:"events"`
	}{batch})
}

// slackLines is how many events a Slack message lists; the rest are counted.
const slackLines = 20

// SlackText renders a batch as the text of one chat message, one line per
// event. Keys (usernames, addresses) and reasons (an operator's note) are
// chosen by whoever failed a login or made a ban, so no value can shape the
// message: each is shown with its control characters, line breaks and
// invisible runes escaped as in a Go string literal (\n, \x1b, \u202e),
// keys and reasons in code formatting with their backticks escaped (\x60),
// and Slack's control characters (&, <, >) escaped in the whole text, so no
// value can start a line, a link (<https://…|text>) or a mention (<!channel>).
func SlackText(batch []Event) string {
	var b strings.Builder
	for i, e := range batch {
		if i > 0 {
			b.WriteByte('\n')
		}
		if i == slackLines {
			fmt.Fprintf(&b, "… and %d more", len(batch)-slackLines)
			break
		}
		fmt.Fprintf(&b, "doorman on %s: %s %s", plain(e.Host), plain(strings.ReplaceAll(e.Type, "_", " ")), code(e.Key))
		if e.Until != "" {
			fmt.Fprintf(&b, " until %s", plain(e.Until))
		}
		var why []string
		if e.Reason != "" {
			why = append(why, "reason "+code(e.Reason))
		}
		if e.Count > 0 {
			why = append(why, fmt.Sprintf("ban #%d", e.Count))
		}
		if e.Source != "" {
			why = append(why, "by "+plain(e.Source))
		}
		if len(why) > 0 {
			fmt.Fprintf(&b, " (%s)", strings.Join(why, ", "))
		}
	}
	return slackEscape.Replace(b.String())
}

// plain escapes s as the inside of a Go string literal: control characters,
// line breaks, invisible and bidirectional runes and invalid UTF-8 become
// \n, \x1b, \u202e …; a backslash is doubled so an escape cannot be faked.
func plain(s string) string {
	q := strconv.Quote(s)
	return q[1 : len(q)-1]
}

// code shows s in code formatting; its backticks, which would end it, are
// escaped as \x60.
func code(s string) string {
	return "`" + strings.ReplaceAll(plain(s), "`", `\x60`) + "`"
}

var slackEscape = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")

// Observe sends the change event e: register it with engine.Local.OnEvent
// before serving.
func (n *Notifier) Observe(e engine.Event) {
	ev := Event{Type: e.Kind, Key: e.Subject(), Reason: e.Reason, Count: e.Count, Source: e.Source}
	if e.Type == engine.EventBan || e.Type == engine.EventLock {
		ev.Until = e.Until.UTC().Format(time.RFC3339)
	}
	n.Send(ev)
}
