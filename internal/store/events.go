package store

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The event history lives in its own bucket, beside the ban records: keys are
// 8-byte big-endian sequence numbers, so the bucket is in time order and the
// oldest entries are the first keys; values are a version byte and the JSON
// of an Event. Entries never change once written.
var eventBucket = []byte("events")

const eventVersion = 1

// Event is one entry of the event history: a ban, an unban, a range ban, a
// lock or an unlock.
type Event struct {
	Time   time.Time `json:"time"`
	Type   string    `json:"type"`
	Key    string    `json:"key"`
	Reason string    `json:"reason,omitempty"`
	Source string    `json:"source,omitempty"`
	Until  time.Time `json:"until,omitzero"`
	Count  int       `json:"count,omitempty"`
}

// KeepEvents sets how many entries the event history keeps (0: none are
// written).
func (s *Store) KeepEvents(max int) { s.maxEvents.Store(int64(max)) }

// AddEvents appends evs durably (fsync, committed together with concurrent
// calls) and deletes the oldest entries beyond the KeepEvents maximum.
func (s *Store) AddEvents(evs ...Event) error { return s.Sync(nil, nil, evs...) }

func encodeEvents(evs []Event) ([][]byte, error) {
	vals := make([][]byte, len(evs))
	for i, e := range evs {
		j, err := json.Marshal(e)
		if err != nil {
			return nil, err
		}
		vals[i] = append([]byte{eventVersion}, j...)
	}
	return vals, nil
}

// appendEvents writes encoded entries inside tx and trims the history to max.
func appendEvents(tx *bolt.Tx, vals [][]byte, max int64) error {
	if len(vals) == 0 || max <= 0 {
		return nil
	}
	b, err := tx.CreateBucketIfNotExists(eventBucket)
	if err != nil {
		return err
	}
	for _, v := range vals {
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		if err := b.Put(binary.BigEndian.AppendUint64(nil, seq), v); err != nil {
			return err
		}
	}
	return trimEvents(b, int(max))
}

// trimEvents deletes the first keys until at most max remain. Keys are
// consecutive from the first to the last, so the count is their difference.
func trimEvents(b *bolt.Bucket, max int) error {
	c := b.Cursor()
	last, _ := c.Last()
	if last == nil || len(last) != 8 {
		return nil
	}
	lastSeq := binary.BigEndian.Uint64(last)
	var old [][]byte
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		if len(k) == 8 && lastSeq-binary.BigEndian.Uint64(k) < uint64(max) {
			break
		}
		old = append(old, append([]byte(nil), k...))
	}
	for _, k := range old {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// Events returns up to limit entries, newest first. Entries that do not
// decode are skipped.
func (s *Store) Events(limit int) (out []Event, err error) {
	defer func() {
		if r := recover(); r != nil {
			out, err = nil, &CorruptError{Path: s.path, Err: fmt.Errorf("%v", r)}
		}
	}()
	err = s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(eventBucket)
		if b == nil {
			return nil
		}
		c := b.Cursor()
		for k, v := c.Last(); k != nil && len(out) < limit; k, v = c.Prev() {
			if e, ok := decodeEvent(v); ok {
				out = append(out, e)
			}
		}
		return nil
	})
	return out, err
}

func decodeEvent(v []byte) (Event, bool) {
	var e Event
	if len(v) < 1 || v[0] != eventVersion || json.Unmarshal(v[1:], &e) != nil {
		return Event{}, false
	}
	return e, true
}
