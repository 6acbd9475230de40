package kernel

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/gaissmai/bart"
	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/engine"
	"github.com/doorman/doorman/internal/throttle"
)

// Options configure a Table.
type Options struct {
	Name     string         // the inet table doorman owns (DOORMAN_NFT_TABLE)
	Hooks    []string       // "input", "forward"
	Ports    []uint16       // the ports closed to banned addresses; empty: every port
	MinCount int            // bans whose count is lower stay out of the kernel; manual bans always go in
	Max      int            // elements per set at most (DOORMAN_MAX_BANS)
	NeverBan []netip.Prefix // accepted before any ban is looked at
	Timeout  time.Duration  // one netlink exchange at most; 0: 2s
	// Record is what memory holds under a key (decide.Core.Record), for
	// Committed and Sync; Bans the bans in force (decide.Core.Bans), for
	// Run's checks every Check (0: 30s).
	Record  func(netip.Prefix) (decide.Ban, bool)
	Bans    func(time.Time) []decide.Ban
	Check   time.Duration
	NetNS   int // an fd of the network namespace to work in; 0: doorman's own
	Metrics *metrics.Set
	Log     *slog.Logger
}

// ErrNoPermission: doorman may not change the kernel's tables.
var ErrNoPermission = errors.New("no permission to change nftables: doorman needs CAP_NET_ADMIN (root, or AmbientCapabilities=CAP_NET_ADMIN in its systemd unit)")

// expiring is how close to its end an element is left alone: the kernel may
// already have dropped it, and deleting an element it no longer holds fails
// the whole transaction.
const expiring = 100 * time.Millisecond

// Table is doorman's nftables table. Safe for concurrent use; writers take
// turns.
type Table struct {
	o  Options
	r  *ruleset
	mu sync.Mutex
	cc *nftables.Conn
	nl *netlink.Conn // cc's socket, for its deadline
	// want are the bans the kernel should hold (key → end, unix ns); have
	// the elements written there, as partition makes them of want.
	want, have *bart.Table[int64]
	failed     map[netip.Prefix]bool // bans whose last write failed
	// lag is the longest a write took: the kernel counts an element's
	// timeout from when it reaches it in the transaction, so an element
	// may end up to lag after its ban.
	lag time.Duration
	m   tableMetrics
	// gen counts the transactions sent on cc: a check whose dump saw a
	// write happen meanwhile compares again.
	gen uint64

	learned engine.LearnedKeys // keys of changes learned from the cluster, for Run
	warned  *throttle.Throttle
}

type tableMetrics struct {
	writes, writeErrors, drift, checks, checkErrors *metrics.Counter
}

// Open connects to netfilter and checks that doorman may change it. It
// changes nothing: Rebuild writes the table.
func Open(o Options) (*Table, error) {
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Second
	}
	if o.Metrics == nil {
		o.Metrics = metrics.NewSet()
	}
	if o.Check <= 0 {
		o.Check = 30 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	t := &Table{o: o, r: newRuleset(&o), want: new(bart.Table[int64]), have: new(bart.Table[int64]), failed: map[netip.Prefix]bool{},
		learned: engine.NewLearnedKeys(learnedQueue), warned: throttle.New(time.Minute)}
	t.m = tableMetrics{
		writes:      o.Metrics.NewCounter("doorman_nft_writes_total"),
		writeErrors: o.Metrics.NewCounter("doorman_nft_write_errors_total"),
		drift:       o.Metrics.NewCounter("doorman_nft_drift_total"),
		checks:      o.Metrics.NewCounter("doorman_nft_checks_total"),
		checkErrors: o.Metrics.NewCounter("doorman_nft_check_errors_total"),
	}
	o.Metrics.NewGauge("doorman_nft_elements", func() float64 {
		t.mu.Lock()
		defer t.mu.Unlock()
		return float64(t.have.Size())
	})
	if err := t.dial(); err != nil {
		return nil, err
	}
	t.deadline(t.o.Timeout)
	if _, err := t.cc.ListTablesOfFamily(nftables.TableFamilyINet); err != nil {
		t.Close()
		if errors.Is(err, os.ErrPermission) || errors.Is(err, unix.EPERM) {
			return nil, ErrNoPermission
		}
		return nil, fmt.Errorf("nftables: listing tables: %w", err)
	}
	return t, nil
}

// dial opens the lasting netlink socket, with buffers big enough for a
// rebuild of a million bans in one transaction.
func (t *Table) dial() error {
	cc, err := nftables.New(nftables.AsLasting(), nftables.WithNetNSFd(t.o.NetNS), nftables.WithSockOptions(func(c *netlink.Conn) error {
		t.nl = c
		rc, err := c.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		err = rc.Control(func(fd uintptr) {
			// Forced (CAP_NET_ADMIN): beyond net.core.wmem_max. Not
			// allocated until used.
			if e := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 256<<20); e != nil {
				serr = e
			}
			if e := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20); e != nil {
				serr = e
			}
		})
		if errors.Is(serr, unix.EPERM) {
			return ErrNoPermission
		}
		return errors.Join(err, serr)
	}))
	if errors.Is(err, ErrNoPermission) {
		return err
	}
	if err != nil {
		return fmt.Errorf("nftables: netlink: %w", err)
	}
	t.cc = cc
	return nil
}

// reader opens a netlink socket of its own for reading the sets, so a
// dump does not hold the table: the kernel dumps a large interval set
// slowly (seconds at 100,000 elements).
func (t *Table) reader() (*nftables.Conn, error) {
	c, err := nftables.New(nftables.AsLasting(), nftables.WithNetNSFd(t.o.NetNS), nftables.WithSockOptions(func(c *netlink.Conn) error {
		rc, err := c.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		err = rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20)
		})
		return errors.Join(err, serr, c.SetDeadline(time.Now().Add(max(t.o.Timeout, rebuildTimeout))))
	}))
	if err != nil {
		return nil, fmt.Errorf("nftables: netlink: %w", err)
	}
	return c, nil
}

func (t *Table) deadline(d time.Duration) {
	if t.nl != nil {
		_ = t.nl.SetDeadline(time.Now().Add(d))
	}
}

// Close closes the netlink socket; the table stays in the kernel.
func (t *Table) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cc == nil {
		return nil
	}
	err := t.cc.CloseLasting()
	t.cc = nil
	return err
}

// flush sends what is queued on t.cc as one transaction, waiting at most d.
// The timeouts queued were counted from now. A socket that timed out may
// still receive the answers: it is replaced.
func (t *Table) flush(d time.Duration, now time.Time) error {
	t.deadline(d)
	err := t.cc.Flush()
	t.gen++
	t.m.writes.Inc()
	if err == nil {
		t.lag = max(t.lag, time.Since(now))
		return nil
	}
	t.m.writeErrors.Inc()
	if errors.Is(err, os.ErrDeadlineExceeded) {
		_ = t.cc.CloseLasting()
		if derr := t.dial(); derr != nil {
			err = errors.Join(err, derr)
		}
	}
	return fmt.Errorf("nftables table %q: %w", t.o.Name, err)
}

// Name is the table's name.
func (t *Table) Name() string { return t.o.Name }

// eligible reports whether b goes to the kernel at all.
func (t *Table) eligible(b decide.Ban) bool { return b.Manual || b.Count >= t.o.MinCount }

// Holds reports whether b was written to the kernel: false for a ban kept
// out (DOORMAN_NFT_MIN_COUNT) or whose last write failed.
func (t *Table) Holds(b decide.Ban) bool {
	if !t.eligible(b) {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	_, in := t.want.Get(b.Key)
	if !in { // covered by a longer ban, or not in force
		_, _, in = t.want.LookupPrefixLPM(b.Key)
	}
	return in && !t.failed[b.Key]
}

// Remove deletes doorman's table (DOORMAN_NFT_REMOVE_ON_STOP).
func (t *Table) Remove() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cc.AddTable(t.r.table) // so that the delete finds it
	t.cc.DelTable(t.r.table)
	t.want, t.have = new(bart.Table[int64]), new(bart.Table[int64])
	return t.flush(t.o.Timeout, time.Now())
}

// String names the table and its hooks for the start line.
func (t *Table) String() string {
	ports := "all"
	if len(t.o.Ports) > 0 {
		ps := make([]string, len(t.o.Ports))
		for i, p := range t.o.Ports {
			ps[i] = fmt.Sprint(p)
		}
		ports = strings.Join(ps, ",")
	}
	return fmt.Sprintf("inet %s (hooks %s, ports %s)", t.o.Name, strings.Join(t.o.Hooks, ","), ports)
}
