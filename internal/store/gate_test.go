package store

import (
	"bytes"
	"path/filepath"
	"testing"
)

func TestGateRecords(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.GateWrite(GateOp{GateCredentials, []byte("a"), []byte("1")}, GateOp{GateCredentials, []byte("b"), []byte("2")},
		GateOp{GateUsers, []byte("alice"), []byte("u")}); err != nil {
		t.Fatal(err)
	}
	if err := s.GateWrite(GateOp{Bucket: GateCredentials, Key: []byte("a")}); err != nil {
		t.Fatal(err)
	}
	gen := func() ([]byte, error) { return bytes.Repeat([]byte{1}, 32), nil }
	k1, created, err := s.GateKey(gen)
	if err != nil || !created {
		t.Fatalf("GateKey: %v created=%v", err, created)
	}
	s.Close()
	if s, err = Open(path); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got := map[string]string{}
	if err := s.GateRecords(GateCredentials, func(k, v []byte) { got[string(k)] = string(v) }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got["b"] != "2" {
		t.Errorf("credentials after reopen: %v, want b=2 only", got)
	}
	k2, created, err := s.GateKey(func() ([]byte, error) { return bytes.Repeat([]byte{2}, 32), nil })
	if err != nil || created || !bytes.Equal(k1, k2) {
		t.Errorf("GateKey after reopen: %x created=%v err=%v, want %x kept", k2, created, err, k1)
	}
}
