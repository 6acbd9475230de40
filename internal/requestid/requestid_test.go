package requestid

import (
	"fmt"
	"testing"
	"time"
)

func TestFirst(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	id := []byte("0f3a9c1d2b4e5f60718293a4b5c6d7e8")
	s := New(3, time.Minute)
	for _, st := range []struct {
		name string
		id   string
		at   time.Duration
		want bool
	}{
		{"first", string(id), 0, true},
		{"again within the window", string(id), 30 * time.Second, false},
		{"upper case is the same id", "0F3A9C1D2B4E5F60718293A4B5C6D7E8", 31 * time.Second, false},
		{"after the window", string(id), 61 * time.Second, true},
		{"empty is always first", "", 62 * time.Second, true},
		{"empty again", "", 62 * time.Second, true},
		{"other id, hashed", "req-123", 63 * time.Second, true},
		{"hashed again", "req-123", 64 * time.Second, false},
		{"too long", string(make([]byte, MaxLen+1)), 65 * time.Second, true},
		{"too long again", string(make([]byte, MaxLen+1)), 65 * time.Second, true},
		{"clock back is not a duplicate", "req-123", 0, true},
	} {
		if got := s.First([]byte(st.id), t0.Add(st.at)); got != st.want {
			t.Errorf("%s: First = %v, want %v", st.name, got, st.want)
		}
	}
	var nilSeen *Seen
	if !nilSeen.First(id, t0) {
		t.Error("a nil Seen must count everything")
	}
}

func TestBounded(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	s := New(100, time.Hour)
	for i := range 1000 {
		s.First(fmt.Appendf(nil, "id-%d", i), t0)
	}
	if s.Len() != 100 {
		t.Fatalf("Len = %d, want 100", s.Len())
	}
	if !s.First([]byte("id-0"), t0) {
		t.Error("the oldest id was not forgotten")
	}
	if s.First([]byte("id-999"), t0) {
		t.Error("the newest id was forgotten")
	}
}

func TestFirstAllocs(t *testing.T) {
	s := New(1000, time.Hour)
	id := []byte("0f3a9c1d2b4e5f60718293a4b5c6d7e8")
	now := time.Now()
	if n := testing.AllocsPerRun(100, func() { s.First(id, now) }); n != 0 {
		t.Errorf("First: %v allocs, want 0", n)
	}
}
