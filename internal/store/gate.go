package store

import (
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// The gate's records live in buckets of their own, their values encoded by
// the gate (internal/gate), which this package does not read:
//
//   - gate_credentials: credential id (16 bytes) → the credential (a passkey's
//     public key and counter, or a TOTP secret and the last step used);
//   - gate_users: normalised username → the user's record (session epoch,
//     WebAuthn user handle);
//   - gate_enrollments: SHA-256 of an enrollment link's token → its record.
//
// The gate key lives in the meta bucket. Every write is one transaction,
// fsynced before it returns.
type GateBucket uint8

// The gate's buckets.
const (
	GateCredentials GateBucket = iota
	GateUsers
	GateEnrollments
	NumGateBuckets
)

var (
	gateBuckets = [NumGateBuckets][]byte{[]byte("gate_credentials"), []byte("gate_users"), []byte("gate_enrollments")}
	gateKeyName = []byte("gate_key")
)

// GateOp is one record to write: Value nil deletes Key.
type GateOp struct {
	Bucket     GateBucket
	Key, Value []byte
}

// GateWrite applies ops in one transaction and fsyncs before returning.
func (s *Store) GateWrite(ops ...GateOp) error {
	if len(ops) == 0 {
		return nil
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, op := range ops {
			if op.Bucket >= NumGateBuckets {
				return fmt.Errorf("gate bucket %d unknown", op.Bucket)
			}
			bk, err := tx.CreateBucketIfNotExists(gateBuckets[op.Bucket])
			if err != nil {
				return err
			}
			if op.Value == nil {
				err = bk.Delete(op.Key)
			} else {
				err = bk.Put(op.Key, op.Value)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
}

// GateRecords calls fn with a copy of every record of bucket b.
func (s *Store) GateRecords(b GateBucket, fn func(k, v []byte)) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &CorruptError{Path: s.path, Err: fmt.Errorf("%v", r)}
		}
	}()
	return s.db.View(func(tx *bolt.Tx) error {
		bk := tx.Bucket(gateBuckets[b])
		if bk == nil {
			return nil
		}
		return bk.ForEach(func(k, v []byte) error {
			fn(append([]byte(nil), k...), append([]byte(nil), v...))
			return nil
		})
	})
}

// GateKey returns the gate key kept in the file, or a new one from gen kept
// there (fsync) first: a key, once it signed sessions, is not replaced.
func (s *Store) GateKey(gen func() ([]byte, error)) (key []byte, created bool, err error) {
	err = s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(metaBucket)
		if err != nil {
			return err
		}
		if old := b.Get(gateKeyName); len(old) > 0 {
			key = append([]byte(nil), old...)
			return nil
		}
		if key, err = gen(); err != nil {
			return err
		}
		created = true
		return b.Put(gateKeyName, key)
	})
	return key, created, err
}

// SetGateKey keeps key durably (fsync) as the gate key, replacing any: for
// the key a cluster of doormen shares.
func (s *Store) SetGateKey(key []byte) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(metaBucket)
		if err != nil {
			return err
		}
		return b.Put(gateKeyName, key)
	})
}

// GateReplace makes the gate's buckets hold exactly sets, indexed by
// GateBucket, in one transaction (fsync): for the records a cluster of
// doormen shares.
func (s *Store) GateReplace(sets [NumGateBuckets]map[string][]byte) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		for b, records := range sets {
			name := gateBuckets[b]
			if tx.Bucket(name) != nil {
				if err := tx.DeleteBucket(name); err != nil {
					return err
				}
			}
			bk, err := tx.CreateBucket(name)
			if err != nil {
				return err
			}
			for k, v := range records {
				if err := bk.Put([]byte(k), v); err != nil {
					return err
				}
			}
		}
		return nil
	})
}
