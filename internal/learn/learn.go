// Package learn is the learning listener (DOORMAN_LEARN_ADDR): it reads the
// proxy's access-log records from a unix datagram socket or a loopback UDP
// socket, and books each login the rules (DOORMAN_LEARN_RULES) recognise as
// a failure or a success through engine.Local as the webhook does
// (Local.FailLearned, Fail with the source learned, whose commit writes the
// failure line; Local.Succeed).
//
// Only the proxy can write a record: the unix socket lives in a directory
// only it and doorman can enter, and UDP datagrams from any address but
// loopback are dropped. A record's client address is believed as the
// decision listener believes the proxy's client-IP header (Caddy's records
// are judged as /forward-auth judges, accesslog.Parser).
//
// One goroutine reads and parses; Workers goroutines book, each the records
// of its share of the ban units, in arrival order: a failure and the
// success after it from one address are booked in that order, and a ban
// being written to the state file (an fsync) holds up only the records of
// its worker's units. Memory is one read buffer of accesslog.MaxRecord bytes
// and a queue of QueueLen small values per worker; when the queues are full
// the reader waits, the kernel's socket buffer fills and drops datagrams,
// and the proxy, which writes them without waiting, does not slow down.
// A Listener's methods are safe for concurrent use.
package learn

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/gaissmai/bart"

	"github.com/doorman/doorman/internal/accesslog"
	"github.com/doorman/doorman/internal/api"
	"github.com/doorman/doorman/internal/engine"
	"github.com/doorman/doorman/internal/requestid"
	"github.com/doorman/doorman/internal/sockfile"
	"github.com/doorman/doorman/internal/throttle"
)

// serviceTimeout bounds one booking (Redis round trips in cluster mode).
const serviceTimeout = 5 * time.Second

// readBuffer is the socket's receive buffer asked of the kernel: a burst of
// about a thousand records waits there while one is booked.
const readBuffer = 4 << 20

// warnEvery is how often each kind of warning is logged at most.
const warnEvery = time.Minute

// The request ids remembered to count a login reported twice once: the
// webhook's report comes before the answer, the record just after it, so a
// minute is ample; 100 000 ids are about 5 MB.
const (
	SeenMax    = 100_000
	SeenWindow = time.Minute
)

// Workers book records; QueueLen records wait for each.
const (
	Workers  = 8
	QueueLen = 256
)

// Options configure a Listener.
type Options struct {
	Network string // "unixgram" or "udp" (config.LearnListen)
	Address string // a socket path, or a loopback host:port
	Rules   *accesslog.Rules
	Trusted *bart.Lite // DOORMAN_TRUSTED_PROXIES, for Caddy's X-Forwarded-For
	Local   *engine.Local
	// Seen is shared with the webhook: a failure whose request id was
	// already counted (the app reported it) is not counted again. nil: off.
	Seen    *requestid.Seen
	Metrics *metrics.Set
	Log     *slog.Logger
	Now     func() time.Time
}

// Listener reads and books records until Close.
type Listener struct {
	o    Options
	conn net.PacketConn
	unix bool
	warn *throttle.Throttle
	c    counters
}

type counters struct {
	read, parsed, failures, successes, ignored, errors, duplicates *metrics.Counter
	dropped                                                        map[string]*metrics.Counter
}

// Drop reasons of the listener's own, besides accesslog's: a UDP datagram
// from another host, and a request id no proxy makes (api.RequestID).
const (
	notLoopback = "not_loopback"
	badID       = "request_id"
)

// Listen opens the socket. A stale unix socket left by an earlier run is
// replaced; a path that is not a socket is refused.
func Listen(o Options) (*Listener, error) {
	l := &Listener{o: o, unix: o.Network == "unixgram", warn: throttle.New(warnEvery)}
	var err error
	if l.unix {
		l.conn, err = listenUnixgram(o.Address)
	} else {
		l.conn, err = net.ListenPacket("udp", o.Address)
	}
	if err != nil {
		return nil, err
	}
	if s, ok := l.conn.(interface{ SetReadBuffer(int) error }); ok {
		_ = s.SetReadBuffer(readBuffer) // the kernel's cap applies; a smaller buffer only drops sooner
	}
	s := o.Metrics
	l.c = counters{
		read:       s.NewCounter("doorman_learn_records_total"),
		parsed:     s.NewCounter("doorman_learn_parsed_total"),
		failures:   s.NewCounter("doorman_learn_failures_total"),
		successes:  s.NewCounter("doorman_learn_successes_total"),
		ignored:    s.NewCounter("doorman_learn_ignored_total"),
		errors:     s.NewCounter("doorman_learn_errors_total"),
		duplicates: s.NewCounter("doorman_learn_duplicates_total"),
		dropped:    map[string]*metrics.Counter{},
	}
	for _, w := range accesslog.Whys() {
		l.c.dropped[w.String()] = s.NewCounter(`doorman_learn_dropped_total{why="` + w.String() + `"}`)
	}
	for _, w := range []string{notLoopback, badID} {
		l.c.dropped[w] = s.NewCounter(`doorman_learn_dropped_total{why="` + w + `"}`)
	}
	return l, nil
}

// listenUnixgram binds path, mode 0666: who may write is decided by the
// directory (docs/learn.md), as for the decision socket.
func listenUnixgram(path string) (net.PacketConn, error) {
	if err := sockfile.Clear("unixgram", path); err != nil {
		return nil, err
	}
	c, err := net.ListenPacket("unixgram", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o666); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Addr is the socket's address (the port chosen for udp:127.0.0.1:0).
func (l *Listener) Addr() net.Addr { return l.conn.LocalAddr() }

// Close stops Run and removes the unix socket.
func (l *Listener) Close() error {
	err := l.conn.Close()
	if l.unix {
		os.Remove(l.o.Address)
	}
	return err
}

// Run reads and books records until the socket is closed, and returns once
// the records read are booked.
func (l *Listener) Run() {
	var queues [Workers]chan learned
	var wg sync.WaitGroup
	for i := range queues {
		queues[i] = make(chan learned, QueueLen)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range queues[i] {
				l.bookOne(r)
			}
		}()
	}
	defer wg.Wait()
	defer func() {
		for _, q := range queues {
			close(q)
		}
	}()
	buf := make([]byte, accesslog.MaxRecord+1) // one more: a longer datagram shows as oversized
	p := accesslog.Parser{Trusted: l.o.Trusted}
	var rec accesslog.Record
	var scratch []byte
	for {
		n, from, err := l.conn.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			l.warnf("read", "learn: reading a record failed", "err", err)
			continue
		}
		l.c.read.Inc()
		if !l.unix && !loopback(from) {
			l.drop(notLoopback, nil)
			continue
		}
		var r learned
		if r, scratch = l.read(&p, &rec, buf[:n], scratch); r.rule != nil {
			queues[shard(r.client)] <- r
		}
	}
}

// learned is a record that says something: what to book.
type learned struct {
	client  netip.Addr
	outcome accesslog.Outcome
	rule    *accesslog.Rule // nil: nothing to book
}

// read parses one datagram and counts what it is.
func (l *Listener) read(p *accesslog.Parser, rec *accesslog.Record, d, scratch []byte) (learned, []byte) {
	if why := p.Parse(d, rec); why != accesslog.OK {
		l.drop(why.String(), d)
		return learned{}, scratch
	}
	if !api.ValidRequestID(rec.RequestID) {
		l.drop(badID, d)
		return learned{}, scratch
	}
	l.c.parsed.Inc()
	out, rule, scratch := l.o.Rules.Match(rec, scratch)
	if out == accesslog.Ignore {
		l.c.ignored.Inc()
		if l.o.Log.Enabled(context.Background(), slog.LevelDebug) {
			l.o.Log.Debug("learn: ignored", "ip", rec.Client.String(), "method", string(rec.Method), "host", string(rec.Host),
				"path", string(scratch), "status", rec.Status)
		}
		return learned{}, scratch
	}
	if out == accesslog.Failure && !l.o.Seen.First(rec.RequestID, l.o.Now()) {
		l.c.duplicates.Inc() // the app's webhook counted this login
		return learned{}, scratch
	}
	return learned{client: rec.Client, outcome: out, rule: rule}, scratch
}

// shard is the worker of a's records: by the /64 of an IPv6 address (a ban
// unit at the default prefix), by the whole IPv4 address.
func shard(a netip.Addr) int {
	var h uint64 = 14695981039346656037 // FNV-1a
	b := a.As16()
	from := 0
	if a.Is4() {
		from = 12
	}
	for _, c := range b[from : from+min(8, 16-from)] {
		h = (h ^ uint64(c)) * 1099511628211
	}
	return int(h % Workers)
}

func loopback(a net.Addr) bool {
	u, ok := a.(*net.UDPAddr)
	if !ok {
		return false
	}
	ap := u.AddrPort()
	return ap.Addr().Unmap().IsLoopback()
}

func (l *Listener) drop(why string, d []byte) {
	l.c.dropped[why].Inc()
	const sample = 80 // bytes of the datagram quoted in the warning
	if len(d) > sample {
		d = d[:sample]
	}
	l.warnf("drop:"+why, "learn: record dropped", "why", why, "start", string(d))
}

// warnf logs at warn level at most once a minute per key (a fixed set).
func (l *Listener) warnf(key, msg string, attrs ...any) {
	skipped, ok := l.warn.Allow(key, l.o.Now())
	if !ok {
		return
	}
	if skipped > 0 {
		attrs = append(attrs, "not_logged_since", skipped)
	}
	l.o.Log.Warn(msg, attrs...)
}

// bookOne books one learned record.
func (l *Listener) bookOne(r learned) {
	// Counted once booked, so that a count says the change is in force.
	switch r.outcome {
	case accesslog.Failure:
		l.fail(r)
		l.c.failures.Inc()
	case accesslog.Success:
		l.succeed(r)
		l.c.successes.Inc()
	}
}

func (l *Listener) fail(r learned) {
	ctx, cancel := context.WithTimeout(context.Background(), serviceTimeout)
	defer cancel()
	// Records carry no username (the proxy does not know it): account locks
	// stay with the webhook.
	if _, err := l.o.Local.FailLearned(ctx, r.client, l.o.Now()); err != nil {
		l.c.errors.Inc()
		l.warnf("service", "learn: failure counted but not saved", "ip", r.client.String(), "path", r.rule.Path, "err", err)
	}
}

func (l *Listener) succeed(r learned) {
	ctx, cancel := context.WithTimeout(context.Background(), serviceTimeout)
	defer cancel()
	if _, _, err := l.o.Local.Succeed(ctx, r.client, l.o.Now()); err != nil {
		l.c.errors.Inc()
		l.warnf("service", "learn: success not booked", "ip", r.client.String(), "err", err)
	}
}
