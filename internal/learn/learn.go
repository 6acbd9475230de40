// Package learn is the learning listener (DOORMAN_LEARN_ADDR): it reads the
// proxy's access-log records from a unix datagram socket or a loopback UDP
// socket, and books each login the rules (DOORMAN_LEARN_RULES) recognise as
// a failure or a success through the same Service calls as the webhook.
//
// Only the proxy can write a record: the unix socket lives in a directory
// only it and doorman can enter, and UDP datagrams from any address but
// loopback are dropped. A record's client address is believed as the
// decision listener believes the proxy's client-IP header (Caddy's records
// are judged as /forward-auth judges, accesslog.Parser).
//
// One goroutine reads and books, in arrival order, so a failure and the
// success after it are booked in that order. Its memory is one buffer of
// accesslog.MaxRecord bytes; under a flood the kernel's socket buffer fills
// and drops datagrams, and the proxy, which writes them without waiting,
// does not slow down. A Listener's methods are safe for concurrent use.
package learn

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/gaissmai/bart"

	"github.com/doorman/doorman/internal/accesslog"
	"github.com/doorman/doorman/internal/engine"
	"github.com/doorman/doorman/internal/throttle"
)

// serviceTimeout bounds one booking (Redis round trips in cluster mode).
const serviceTimeout = 5 * time.Second

// readBuffer is the socket's receive buffer asked of the kernel: a burst of
// about a thousand records waits there while one is booked.
const readBuffer = 4 << 20

// warnEvery is how often each kind of warning is logged at most.
const warnEvery = time.Minute

// Options configure a Listener.
type Options struct {
	Network string // "unixgram" or "udp" (config.LearnListen)
	Address string // a socket path, or a loopback host:port
	Rules   *accesslog.Rules
	Trusted *bart.Lite // DOORMAN_TRUSTED_PROXIES, for Caddy's X-Forwarded-For
	Service engine.Service
	Metrics *metrics.Set
	Log     *slog.Logger
	Now     func() time.Time
}

// Listener reads and books records until Close.
type Listener struct {
	o      Options
	conn   net.PacketConn
	unix   bool
	warn   *throttle.Throttle
	c      counters
	failed engine.FailureLog
}

type counters struct {
	read, parsed, failures, successes, ignored, errors *metrics.Counter
	dropped                                           map[string]*metrics.Counter
}

// notLoopback is the drop reason of a UDP datagram from another host.
const notLoopback = "not_loopback"

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
		read:      s.NewCounter("doorman_learn_records_total"),
		parsed:    s.NewCounter("doorman_learn_parsed_total"),
		failures:  s.NewCounter("doorman_learn_failures_total"),
		successes: s.NewCounter("doorman_learn_successes_total"),
		ignored:   s.NewCounter("doorman_learn_ignored_total"),
		errors:    s.NewCounter("doorman_learn_errors_total"),
		dropped:   map[string]*metrics.Counter{},
	}
	for _, w := range accesslog.Whys() {
		l.c.dropped[w.String()] = s.NewCounter(`doorman_learn_dropped_total{why="` + w.String() + `"}`)
	}
	l.c.dropped[notLoopback] = s.NewCounter(`doorman_learn_dropped_total{why="` + notLoopback + `"}`)
	return l, nil
}

// listenUnixgram binds path, mode 0666: who may write is decided by the
// directory (docs/learn.md), as for the decision socket.
func listenUnixgram(path string) (net.PacketConn, error) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&fs.ModeSocket != 0 {
		if c, err := net.Dial("unixgram", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s: another process is listening", path)
		}
		os.Remove(path)
	} else if err == nil {
		return nil, fmt.Errorf("%s exists and is not a socket", path)
	} else if !errors.Is(err, fs.ErrNotExist) {
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

// Run reads and books records until the socket is closed.
func (l *Listener) Run() {
	buf := make([]byte, accesslog.MaxRecord+1) // one more: a longer datagram shows as oversized
	b := booker{l: l, p: accesslog.Parser{Trusted: l.o.Trusted}}
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
		b.book(buf[:n])
	}
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

// booker is the reading goroutine's state.
type booker struct {
	l       *Listener
	p       accesslog.Parser
	r       accesslog.Record
	scratch []byte
}

// book parses one datagram and books what it says.
func (b *booker) book(d []byte) {
	l := b.l
	if why := b.p.Parse(d, &b.r); why != accesslog.OK {
		l.drop(why.String(), d)
		return
	}
	l.c.parsed.Inc()
	var out accesslog.Outcome
	out, b.scratch = l.o.Rules.Match(&b.r, b.scratch)
	switch out {
	case accesslog.Failure:
		l.c.failures.Inc()
		l.fail(&b.r, b.scratch)
	case accesslog.Success:
		l.c.successes.Inc()
		l.succeed(&b.r)
	default:
		l.c.ignored.Inc()
	}
}

func (l *Listener) fail(r *accesslog.Record, path []byte) {
	ctx, cancel := context.WithTimeout(context.Background(), serviceTimeout)
	defer cancel()
	now := l.o.Now()
	res, err := l.o.Service.Fail(ctx, r.Client, now)
	if err != nil && !res.Banned {
		l.c.errors.Inc()
		l.warnf("service", "learn: failure not booked", "ip", r.Client.String(), "err", err)
		return
	}
	l.failed.Log(l.o.Log, now, res.Key, "ip", res.Addr.String(), "key", res.Key.String(), "failures", res.Failures,
		"source", "learn", "path", string(path), "status", r.Status)
	if err != nil {
		l.c.errors.Inc()
		l.warnf("service", "learn: ban in force but not saved", "ip", r.Client.String(), "err", err)
	}
}

func (l *Listener) succeed(r *accesslog.Record) {
	ctx, cancel := context.WithTimeout(context.Background(), serviceTimeout)
	defer cancel()
	if _, _, err := l.o.Service.Succeed(ctx, r.Client, l.o.Now()); err != nil {
		l.c.errors.Inc()
		l.warnf("service", "learn: success not booked", "ip", r.Client.String(), "err", err)
	}
}
