package store

import (
	"bytes"
	"errors"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/doorman/doorman/decide"
)

func TestLocksRoundTrip(t *testing.T) {
	path := t.TempDir() + "/state.db"
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	mem := map[string]decide.Lock{
		"admin":     {Username: "admin", Until: now.Add(time.Hour), Count: 3, Failures: 10},
		"ｊａｎｅ":      {Username: "jane", Until: now.Add(-time.Hour), Count: 1, Failures: 10}, // ended, remembered
		"forgotten": {Username: "forgotten", Until: now.Add(-200 * time.Hour), Count: 1},
	}
	users := []string{"admin", "ｊａｎｅ", "forgotten", "gone"}
	err = s.SyncLocks(users, func(u string) (decide.Lock, bool) { l, ok := mem[u]; l.Username = u; return l, ok })
	if err != nil {
		t.Fatal(err)
	}
	// A write of an account memory no longer holds deletes it.
	delete(mem, "ｊａｎｅ")
	s.SyncLocks([]string{"ｊａｎｅ"}, func(u string) (decide.Lock, bool) { l, ok := mem[u]; return l, ok })
	s.Close()

	s, err = Open(path) // the accounts bucket passes the read-through check
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.LoadLocks(now, 168*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Username != "admin" || !got[0].Until.Equal(now.Add(time.Hour)) || got[0].Count != 3 || got[0].Failures != 10 {
		t.Fatalf("LoadLocks = %+v, want admin alone", got)
	}
	// The forgotten one was deleted by the load.
	s.db.View(func(tx *bolt.Tx) error {
		if n := tx.Bucket(accountBucket).Stats().KeyN; n != 1 {
			t.Errorf("%d records left, want 1", n)
		}
		return nil
	})
}

func TestDeviceKeyKept(t *testing.T) {
	path := t.TempDir() + "/state.db"
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if k, err := s.DeviceKey(); k != nil || err != nil {
		t.Fatalf("new file: key %x, %v", k, err)
	}
	key := bytes.Repeat([]byte{7}, 32)
	if err := s.PutDeviceKey(key); err != nil {
		t.Fatal(err)
	}
	if err := s.PutDeviceKey(bytes.Repeat([]byte{8}, 32)); !errors.Is(err, ErrDeviceKeyExists) {
		t.Errorf("second key: %v, want ErrDeviceKeyExists", err)
	}
	s.Close()
	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if k, err := s.DeviceKey(); !bytes.Equal(k, key) || err != nil {
		t.Errorf("after reopen: %x, %v", k, err)
	}
}

func TestUndecodableLocksDropped(t *testing.T) {
	s, err := Open(t.TempDir() + "/state.db")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.db.Update(func(tx *bolt.Tx) error {
		b, _ := tx.CreateBucketIfNotExists(accountBucket)
		b.Put([]byte("short"), []byte{1, 2})
		b.Put([]byte("v9"), append([]byte{9}, make([]byte, 14)...))
		return nil
	})
	if got, err := s.LoadLocks(time.Now(), time.Hour); err != nil || len(got) != 0 {
		t.Errorf("LoadLocks = %v, %v; want nothing", got, err)
	}
}
