// Package store keeps doorman's ban records in an embedded bbolt file, so that
// bans survive restarts and kill -9. Put returns only after the record is on
// disk (fsync), so a ban the API acknowledged is never lost. Concurrent Puts are
// committed together in one transaction. A Store is safe for concurrent use.
//
// Failure counters are not stored: losing them on a crash only delays a ban.
package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime/debug"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/doorman/doorman/decide"
)

var bucket = []byte("bans")

const version = 1

// Store is an open state file.
type Store struct {
	db        *bolt.DB
	path      string
	maxEvents atomic.Int64 // entries the event history keeps (KeepEvents)
}

// CorruptError says the state file exists but cannot be read as one.
type CorruptError struct {
	Path string
	Err  error
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("state file %s is unreadable (%v); set DOORMAN_STATE_RESET=true to move it aside and start empty", e.Path, e.Err)
}

func (e *CorruptError) Unwrap() error { return e.Err }

// Open opens or creates the state file at path. An existing file is first
// read through, read-only, so that a damaged one gives a *CorruptError and is
// left byte for byte as it was.
func Open(path string) (*Store, error) {
	if fi, err := os.Stat(path); err == nil && fi.Size() > 0 {
		if err := verify(path); err != nil {
			return nil, err
		}
	}
	db, err := openRW(path)
	if err != nil {
		return nil, err
	}
	db.MaxBatchDelay = 2 * time.Millisecond
	db.MaxBatchSize = 4096
	err = db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucket)
		return err
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("state file %s: %w", path, err)
	}
	return &Store{db: db, path: path}, nil
}

// openRW opens path for writing. verify has read it through already; the
// recover is a second guard, so a damaged file is an error, never a crash.
func openRW(path string) (db *bolt.DB, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, &CorruptError{Path: path, Err: fmt.Errorf("%v", r)}
		}
	}()
	// The free list is rebuilt at open instead of written at every commit, and
	// kept as a map: both make the many small ban commits cheaper.
	db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second, NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return nil, openError(path, err)
	}
	return db, nil
}

func openError(path string, err error) error {
	switch {
	case errors.Is(err, bolt.ErrTimeout):
		return fmt.Errorf("state file %s is locked by another process", path)
	case errors.Is(err, os.ErrPermission), errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("state file %s: %w", path, err)
	}
	return &CorruptError{Path: path, Err: err}
}

// verify opens path read-only and visits every record. A damaged file can make
// bbolt panic or fault on its memory map: both are a corrupt file, not a crash.
func verify(path string) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = &CorruptError{Path: path, Err: fmt.Errorf("%v", r)}
		}
	}()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 2 * time.Second})
	if err != nil {
		return openError(path, err)
	}
	defer db.Close()
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	err = db.View(func(tx *bolt.Tx) error {
		// bbolt grows the file before it writes a meta page naming the new
		// size, so a healthy file is never shorter than its pages in use.
		if fi.Size() < tx.Size() {
			return fmt.Errorf("file is %d bytes, its pages in use need %d: truncated", fi.Size(), tx.Size())
		}
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			return b.ForEach(func(k, v []byte) error {
				if _, ok := decode(k, v); !ok && bytes.Equal(name, bucket) {
					return fmt.Errorf("undecodable record %q", k)
				}
				return nil
			})
		})
	})
	if err != nil {
		return &CorruptError{Path: path, Err: err}
	}
	return nil
}

// MoveAside renames a damaged state file to path.corrupt-<unix seconds> and
// returns the new name.
func MoveAside(path string, now time.Time) (string, error) {
	to := fmt.Sprintf("%s.corrupt-%d", path, now.Unix())
	return to, os.Rename(path, to)
}

// Path returns the file's path.
func (s *Store) Path() string { return s.path }

// Close closes the file.
func (s *Store) Close() error { return s.db.Close() }

// Put writes b durably.
func (s *Store) Put(b decide.Ban) error {
	k, v := encode(b)
	return s.db.Batch(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Put(k, v) })
}

// Delete removes the records under keys durably.
func (s *Store) Delete(keys ...netip.Prefix) error {
	return s.Sync(keys, func(netip.Prefix) (decide.Ban, bool) { return decide.Ban{}, false })
}

// Sync writes, durably, the record current reports for each key (current's
// false: the record is deleted), and appends evs to the event history (see
// AddEvents), in one transaction; see Write.
func (s *Store) Sync(keys []netip.Prefix, current func(netip.Prefix) (decide.Ban, bool), evs ...Event) error {
	return s.Write(Write{Keys: keys, Ban: current, Events: evs})
}

// Write is one change's writes: the ban records under Keys and the account
// records of Users as memory holds them (Ban and Lock report them, false:
// deleted), and history entries.
type Write struct {
	Keys   []netip.Prefix
	Ban    func(netip.Prefix) (decide.Ban, bool)
	Users  []string
	Lock   func(string) (decide.Lock, bool)
	Events []Event
}

// Write commits w durably (fsync) in one transaction: a change and its
// history entry are on disk together or not at all. Ban and Lock are called
// inside the write transaction, so the file always ends up with what memory
// held when the last write of a key committed, whatever order concurrent
// writes of that key committed in: a writer never puts a stale record or
// deletes a fresh one.
func (s *Store) Write(w Write) error {
	if len(w.Keys) == 0 && len(w.Users) == 0 && len(w.Events) == 0 {
		return nil
	}
	vals, err := encodeEvents(w.Events)
	if err != nil {
		return err
	}
	return s.db.Batch(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucket)
		for _, k := range w.Keys {
			b, ok := w.Ban(k)
			if !ok {
				if err := bk.Delete([]byte(k.String())); err != nil {
					return err
				}
				continue
			}
			kb, v := encode(b)
			if err := bk.Put(kb, v); err != nil {
				return err
			}
		}
		if err := putLocks(tx, w.Users, w.Lock); err != nil {
			return err
		}
		return appendEvents(tx, vals, s.maxEvents.Load())
	})
}

// Load returns the records still worth keeping at now: those whose ban ended
// less than forget ago (their count drives escalation). Older records and
// records that do not decode are deleted.
func (s *Store) Load(now time.Time, forget time.Duration) ([]decide.Ban, error) {
	return loadBucket(s, bucket, decode, func(b decide.Ban) bool { return now.Sub(b.Until) <= forget })
}

// loadBucket returns the records of bucket name that decode and that keep
// accepts, and deletes the others, in one write transaction. A damaged file
// that makes bbolt panic is a *CorruptError.
func loadBucket[T any](s *Store, name []byte, decode func(k, v []byte) (T, bool), keep func(T) bool) (out []T, err error) {
	defer func() {
		if r := recover(); r != nil {
			out, err = nil, &CorruptError{Path: s.path, Err: fmt.Errorf("%v", r)}
		}
	}()
	err = s.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(name)
		if bk == nil {
			return nil
		}
		var stale [][]byte
		err := bk.ForEach(func(k, v []byte) error {
			r, ok := decode(k, v)
			if !ok || !keep(r) {
				stale = append(stale, append([]byte(nil), k...))
				return nil
			}
			out = append(out, r)
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range stale {
			if err := bk.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	return out, err
}

// Record layout: version(1) until(8) count(4) failures(2) kind(1: 0 failures, 1 manual, 2 range) note(rest).
func encode(b decide.Ban) ([]byte, []byte) {
	v := make([]byte, 16, 16+len(b.Note))
	v[0] = version
	binary.BigEndian.PutUint64(v[1:], uint64(b.Until.UnixNano()))
	binary.BigEndian.PutUint32(v[9:], uint32(b.Count))
	binary.BigEndian.PutUint16(v[13:], uint16(min(b.Failures, 1<<16-1)))
	switch {
	case b.Manual:
		v[15] = 1
	case b.Range:
		v[15] = 2
	}
	return []byte(b.Key.String()), append(v, b.Note...)
}

func decode(k, v []byte) (decide.Ban, bool) {
	p, err := netip.ParsePrefix(string(k))
	if err != nil || len(v) < 16 || v[0] != version {
		return decide.Ban{}, false
	}
	return decide.Ban{
		Key:      p,
		Until:    time.Unix(0, int64(binary.BigEndian.Uint64(v[1:]))).UTC(),
		Count:    int(binary.BigEndian.Uint32(v[9:])),
		Failures: int(binary.BigEndian.Uint16(v[13:])),
		Manual:   v[15] == 1,
		Range:    v[15] == 2,
		Note:     string(v[16:]),
	}, true
}
