package server

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Limits bound how long a connection of the decision listener may stay in
// one phase: waiting for a request (Idle; Read for a new connection's first
// request), reading one (Read, from its first byte to its last, body
// included, until the answer starts), and writing an answer (Write).
type Limits struct {
	Idle, Read, Write time.Duration
}

// WatchTick is how often a watched listener's sweep runs: a connection is
// closed between its limit and its limit plus WatchTick.
const WatchTick = 250 * time.Millisecond

// Watch returns ln with each accepted connection watched against lim: a
// sweep every WatchTick closes the connections over their phase's limit,
// so a client that sends half a request, or reads no answer, holds a
// worker for the limit and no longer.
//
// It does what fasthttp's ReadTimeout, WriteTimeout and IdleTimeout do, at a
// fraction of the cost: those set up to three socket deadlines per request,
// each two or three clock reads and a runtime timer update, the largest
// cost of the decision listener beyond the floor (docs/benchmarks.md). Here
// a request costs a few atomic operations on its connection and the clock
// is read by the sweep alone. The sweep stops when the listener is closed.
func Watch(ln net.Listener, lim Limits) net.Listener {
	w := &watchedListener{Listener: ln, lim: lim, conns: map[*watchedConn]struct{}{}, done: make(chan struct{})}
	w.stopped.Add(1)
	go w.sweep()
	return w
}

type watchedListener struct {
	net.Listener
	lim   Limits
	tick  atomic.Int64 // sweeps so far: the coarse clock phases are timed by
	mu    sync.Mutex
	conns map[*watchedConn]struct{}

	done      chan struct{}
	closeOnce sync.Once
	stopped   sync.WaitGroup
}

// A connection's phase and the tick it began at, in one word.
const (
	phaseFirst   = iota // accepted, no request yet: Read bounds it
	phaseIdle           // answered, waiting for the next request
	phaseReading        // a request's first byte arrived
	phaseWriting        // the answer is being written
	phaseBits    = 2
)

type watchedConn struct {
	net.Conn
	l         *watchedListener
	state     atomic.Int64 // tick<<phaseBits | phase
	closeOnce sync.Once
}

func (l *watchedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	wc := &watchedConn{Conn: c, l: l}
	wc.state.Store(l.tick.Load()<<phaseBits | phaseFirst)
	l.mu.Lock()
	l.conns[wc] = struct{}{}
	l.mu.Unlock()
	return wc, nil
}

// Close closes the listener and stops the sweep; accepted connections stay
// open (fasthttp's Shutdown closes them).
func (l *watchedListener) Close() error {
	err := l.Listener.Close()
	l.closeOnce.Do(func() { close(l.done) })
	l.stopped.Wait()
	return err
}

func (l *watchedListener) sweep() {
	defer l.stopped.Done()
	t := time.NewTicker(WatchTick)
	defer t.Stop()
	for {
		select {
		case <-l.done:
			return
		case <-t.C:
		}
		now := l.tick.Add(1)
		var over []*watchedConn
		l.mu.Lock()
		for c := range l.conns {
			s := c.state.Load()
			if time.Duration(now-s>>phaseBits)*WatchTick > l.limit(s&(1<<phaseBits-1)) {
				over = append(over, c)
			}
		}
		l.mu.Unlock()
		for _, c := range over {
			c.Close() // a blocked Read or Write returns with an error
		}
	}
}

func (l *watchedListener) limit(phase int64) time.Duration {
	switch phase {
	case phaseIdle:
		return l.lim.Idle
	case phaseWriting:
		return l.lim.Write
	}
	return l.lim.Read
}

func (c *watchedConn) set(phase int64) {
	c.state.Store(c.l.tick.Load()<<phaseBits | phase)
}

func (c *watchedConn) phase() int64 { return c.state.Load() & (1<<phaseBits - 1) }

// Read after an answer starts the wait for the next request; the first
// bytes it returns start that request's reading.
func (c *watchedConn) Read(b []byte) (int, error) {
	p := c.phase()
	if p == phaseWriting {
		c.set(phaseIdle)
		p = phaseIdle
	}
	n, err := c.Conn.Read(b)
	if n > 0 && p != phaseReading {
		c.set(phaseReading)
	}
	return n, err
}

// Write starts the answer's writing phase.
func (c *watchedConn) Write(b []byte) (int, error) {
	if c.phase() != phaseWriting {
		c.set(phaseWriting)
	}
	return c.Conn.Write(b)
}

func (c *watchedConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
	})
	return err
}
