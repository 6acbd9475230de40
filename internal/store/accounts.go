package store

import (
	"encoding/binary"
	"errors"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/doorman/doorman/decide"
)

// Account locks live in their own bucket, beside the ban records: the key is
// the normalised username, the value version(1) until(8, unix ns) count(4)
// failures(2). An account is written when it is locked and deleted when it
// is unlocked or evicted; a lock that ended stays (its count drives
// escalation) until Load finds it older than forget. The device key lives in
// the meta bucket. Neither holds a password or a device token.
var (
	accountBucket = []byte("accounts")
	metaBucket    = []byte("meta")
	deviceKeyName = []byte("device_key")
)

const accountVersion = 1

// SyncLocks writes, for each username, the lock memory holds for it now
// (current reports it, and false when there is none to keep, which deletes
// the record), and fsyncs before returning. Reading memory inside the
// commit means concurrent changes of one account can never leave a stale
// record on disk.
func (s *Store) SyncLocks(users []string, current func(string) (decide.Lock, bool)) error {
	return s.Write(Write{Users: users, Lock: current})
}

func putLocks(tx *bolt.Tx, users []string, current func(string) (decide.Lock, bool)) error {
	if len(users) == 0 {
		return nil
	}
	bk, err := tx.CreateBucketIfNotExists(accountBucket)
	if err != nil {
		return err
	}
	for _, u := range users {
		l, ok := current(u)
		if !ok {
			if err := bk.Delete([]byte(u)); err != nil {
				return err
			}
			continue
		}
		if err := bk.Put([]byte(u), encodeLock(l)); err != nil {
			return err
		}
	}
	return nil
}

// LoadLocks returns the locks still worth keeping at now: those that ended
// less than forget ago. Older records and records that do not decode are
// deleted.
func (s *Store) LoadLocks(now time.Time, forget time.Duration) ([]decide.Lock, error) {
	return loadBucket(s, accountBucket, decodeLock, func(l decide.Lock) bool { return now.Sub(l.Until) <= forget })
}

// DeviceKey returns the device key kept in the file, or nil when there is none.
func (s *Store) DeviceKey() (key []byte, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(metaBucket); b != nil {
			key = append([]byte(nil), b.Get(deviceKeyName)...)
		}
		return nil
	})
	if len(key) == 0 {
		key = nil
	}
	return key, err
}

// ErrDeviceKeyExists says the file already holds a device key.
var ErrDeviceKeyExists = errors.New("state file already holds a device key")

// PutDeviceKey keeps key durably (fsync) as the device key, unless the file
// already holds one (ErrDeviceKeyExists): a key, once used to sign tokens,
// is not replaced.
func (s *Store) PutDeviceKey(key []byte) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(metaBucket)
		if err != nil {
			return err
		}
		if b.Get(deviceKeyName) != nil {
			return ErrDeviceKeyExists
		}
		return b.Put(deviceKeyName, key)
	})
}

// SetDeviceKey keeps key durably (fsync) as the device key, replacing any:
// for the key a cluster of doormen shares.
func (s *Store) SetDeviceKey(key []byte) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(metaBucket)
		if err != nil {
			return err
		}
		return b.Put(deviceKeyName, key)
	})
}

func encodeLock(l decide.Lock) []byte {
	v := make([]byte, 15)
	v[0] = accountVersion
	binary.BigEndian.PutUint64(v[1:], uint64(l.Until.UnixNano()))
	binary.BigEndian.PutUint32(v[9:], uint32(min(max(l.Count, 0), 1<<31)))
	binary.BigEndian.PutUint16(v[13:], uint16(min(max(l.Failures, 0), 1<<16-1)))
	return v
}

func decodeLock(k, v []byte) (decide.Lock, bool) {
	if len(k) == 0 || len(k) > decide.MaxUsername || len(v) != 15 || v[0] != accountVersion {
		return decide.Lock{}, false
	}
	return decide.Lock{
		Username: string(k),
		Until:    time.Unix(0, int64(binary.BigEndian.Uint64(v[1:]))).UTC(),
		Count:    int(binary.BigEndian.Uint32(v[9:])),
		Failures: int(binary.BigEndian.Uint16(v[13:])),
	}, true
}
