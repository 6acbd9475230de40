package store

import (
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func ev(i int) Event {
	return Event{Time: t0.Add(time.Duration(i) * time.Second), Type: "ban", Key: fmt.Sprintf("192.0.2.%d/32", i%256),
		Reason: "failures", Source: "failures", Until: t0.Add(time.Hour), Count: i}
}

func counts(evs []Event) []int {
	out := make([]int, len(evs))
	for i, e := range evs {
		out[i] = e.Count
	}
	return out
}

func TestEventsBoundedAndDurable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.Events(10); err != nil || len(got) != 0 {
		t.Fatalf("empty file: got %v, %v; want none", got, err)
	}
	for i := 1; i <= 7; i++ {
		s.KeepEvents(5)
		if err := s.AddEvents(ev(i)); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		limit int
		want  string
	}{
		{10, "[7 6 5 4 3]"}, // the oldest beyond 5 dropped, newest first
		{2, "[7 6]"},
		{0, "[]"},
	} {
		got, err := s.Events(tc.limit)
		if err != nil || fmt.Sprint(counts(got)) != tc.want {
			t.Errorf("Events(%d): got %v (%v), want %s", tc.limit, counts(got), err, tc.want)
		}
	}
	s.Close()

	// Kept across a restart, and the ban records beside them still load.
	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.Events(10)
	if err != nil || fmt.Sprint(counts(got)) != "[7 6 5 4 3]" {
		t.Fatalf("after reopen: got %v (%v)", counts(got), err)
	}
	if want := ev(7); got[0] != want {
		t.Errorf("entry: got %+v, want %+v", got[0], want)
	}
	if _, err := s.Load(t0, time.Hour); err != nil {
		t.Errorf("Load beside the events: %v", err)
	}

	// A smaller maximum after a restart drops the excess at the next append.
	s.KeepEvents(2)
	if err := s.AddEvents(ev(8), ev(9)); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Events(10); fmt.Sprint(counts(got)) != "[9 8]" {
		t.Errorf("after max 2: got %v, want [9 8]", counts(got))
	}
}

func TestEventsConcurrent(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.KeepEvents(100)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				if err := s.AddEvents(ev(g*1000 + i)); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	got, err := s.Events(1000)
	if err != nil || len(got) != 100 {
		t.Fatalf("got %d events (%v), want the last 100 of 400", len(got), err)
	}
	// Newest first: each writer's entries appear in decreasing order.
	last := map[int]int{}
	for _, e := range got {
		g, i := e.Count/1000, e.Count%1000
		if prev, ok := last[g]; ok && i >= prev {
			t.Fatalf("writer %d: %d after %d, want newest first", g, i, prev)
		}
		last[g] = i
	}
}

// An entry that does not decode is skipped, not an error; the file still
// opens (verify reads the events bucket through without judging it).
func TestEventsUndecodable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	s.KeepEvents(10)
	if err := s.AddEvents(ev(1), ev(2), ev(3)); err != nil {
		t.Fatal(err)
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(eventBucket).Put([]byte{0, 0, 0, 0, 0, 0, 0, 2}, []byte("\x09garbage"))
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = Open(path)
	if err != nil {
		t.Fatalf("reopen with a bad entry: %v", err)
	}
	defer s.Close()
	if got, err := s.Events(10); err != nil || fmt.Sprint(counts(got)) != "[3 1]" {
		t.Errorf("got %v (%v), want [3 1]", counts(got), err)
	}
}
