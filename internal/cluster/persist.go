package cluster

import (
	"hash/maphash"
	"net/netip"
	"sync"
	"time"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/engine"
)

// job is a change learned from the cluster and already in force in memory,
// to be booked (engine.Local.Learn); key is the ban key it is about, which
// orders the jobs of one key.
type job struct {
	key netip.Prefix
	ch  engine.Change
}

// banJob is the job of ban b put in force, with the records it evicted.
func banJob(ip string, b decide.Ban, evicted []decide.Ban) job {
	return job{key: b.Key, ch: engine.Change{IP: ip, Ban: &b, Evicted: evicted}}
}

// unbanJob is the job of ban b lifted.
func unbanJob(ip string, b decide.Ban) job {
	return job{key: b.Key, ch: engine.Change{IP: ip, Lifted: []decide.Ban{b}}}
}

const (
	numWorkers = 8
	maxBatch   = 1024 // jobs a worker persists together
)

// writer runs the jobs off the sync loop, so a slow disk never delays
// applying the next change to memory; jobs of one key run in order. Each
// worker's queue never blocks the sender: a full sync applies 100k bans in a
// second or two, and their state-file writes follow at the disk's pace.
type writer struct {
	local  *engine.Local
	now    func() time.Time
	queues [numWorkers]*jobQueue
	wg     sync.WaitGroup
}

func newWriter(l *engine.Local, now func() time.Time) *writer {
	w := &writer{local: l, now: now}
	for i := range w.queues {
		q := &jobQueue{}
		q.cond.L = &q.mu
		w.queues[i] = q
	}
	return w
}

func (w *writer) start() {
	for _, q := range w.queues {
		w.wg.Go(func() {
			for batch := q.take(maxBatch); batch != nil; batch = q.take(maxBatch) {
				w.persist(batch)
			}
		})
	}
}

// stop finishes the queued jobs and returns.
func (w *writer) stop() {
	for _, q := range w.queues {
		q.close()
	}
	w.wg.Wait()
}

func (w *writer) enqueue(j job) {
	w.queues[maphash.Comparable(shardSeed, j.key)%numWorkers].push(j)
}

// persist runs a batch of jobs concurrently, so that the state file commits
// them in few transactions, in waves that hold at most one job per key, so
// those of one key keep their order.
func (w *writer) persist(batch []job) {
	for len(batch) > 0 {
		seen := make(map[netip.Prefix]bool, len(batch))
		var wave, rest []job
		for _, j := range batch {
			if seen[j.key] {
				rest = append(rest, j)
				continue
			}
			seen[j.key] = true
			wave = append(wave, j)
		}
		var wg sync.WaitGroup
		for _, j := range wave {
			// An error is logged and counted by the Local; the change is in
			// force and the next write of the key stores it.
			wg.Go(func() { w.local.Learn(j.ch, w.now()) })
		}
		wg.Wait()
		batch = rest
	}
}

// jobQueue is a FIFO that never blocks the sender. It holds at most one entry
// per change not yet written.
type jobQueue struct {
	mu     sync.Mutex
	cond   sync.Cond
	jobs   []job
	closed bool
}

func (q *jobQueue) push(j job) {
	q.mu.Lock()
	q.jobs = append(q.jobs, j)
	q.mu.Unlock()
	q.cond.Signal()
}

// take waits for jobs and returns up to max of them; nil once closed and empty.
func (q *jobQueue) take(max int) []job {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.jobs) == 0 && !q.closed {
		q.cond.Wait()
	}
	n := min(len(q.jobs), max)
	out := append([]job(nil), q.jobs[:n]...)
	q.jobs = q.jobs[n:]
	if len(q.jobs) == 0 {
		q.jobs = nil // let a drained backlog's array go
	}
	return out
}

func (q *jobQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.cond.Broadcast()
}
