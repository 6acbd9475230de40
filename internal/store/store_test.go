package store

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/doorman/doorman/decide"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func TestPutLoadDelete(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	bans := []decide.Ban{
		{Key: netip.MustParsePrefix("192.0.2.1/32"), Until: t0.Add(time.Hour), Count: 2, Failures: 5},
		{Key: netip.MustParsePrefix("2001:db8::/64"), Until: t0.Add(2 * time.Hour), Count: 1, Manual: true, Note: "scanner"},
		{Key: netip.MustParsePrefix("10.0.0.0/8"), Until: t0.Add(-time.Hour), Count: 3},        // expired, remembered
		{Key: netip.MustParsePrefix("10.1.0.0/16"), Until: t0.Add(-200 * time.Hour), Count: 1}, // forgotten
	}
	for _, b := range bans {
		if err := s.Put(b); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Delete(bans[0].Key); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.Load(t0, 168*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	want := map[netip.Prefix]decide.Ban{bans[1].Key: bans[1], bans[2].Key: bans[2]}
	if len(got) != len(want) {
		t.Fatalf("loaded %v, want %v", got, want)
	}
	for _, b := range got {
		w := want[b.Key]
		if !b.Until.Equal(w.Until) || b.Count != w.Count || b.Manual != w.Manual || b.Note != w.Note || b.Failures != w.Failures {
			t.Errorf("loaded %+v, want %+v", b, w)
		}
	}
	// The forgotten record was deleted from the file.
	again, _ := s.Load(t0, 1000*time.Hour)
	if len(again) != 2 {
		t.Errorf("after cleanup: %d records, want 2", len(again))
	}
}

func TestDamagedFileIsRefusedAndKept(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.db")
	s, err := Open(good)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		s.Put(decide.Ban{Key: netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, byte(i >> 8), byte(i)}), 32), Until: t0, Count: 1})
	}
	s.Close()
	full, _ := os.ReadFile(good)

	tests := []struct {
		name string
		data []byte
	}{
		{"garbage", bytes.Repeat([]byte("not a database "), 2000)},
		{"truncated", full[:len(full)/3]},
		{"zeroed middle", append(append(append([]byte{}, full[:8192]...), make([]byte, 8192)...), full[16384:]...)},
		{"tiny", []byte("x")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name+".db")
			os.WriteFile(path, tc.data, 0o600)
			s, err := Open(path)
			if err == nil {
				_, err = s.Load(t0, time.Hour)
				s.Close()
			}
			var ce *CorruptError
			if !errors.As(err, &ce) || ce.Path != path {
				t.Fatalf("err = %v, want a CorruptError naming %s", err, path)
			}
			after, _ := os.ReadFile(path)
			if !bytes.Equal(after, tc.data) {
				t.Fatal("the damaged file was changed")
			}
			moved, err := MoveAside(path, t0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(moved); err != nil {
				t.Fatal(err)
			}
		})
	}
}
