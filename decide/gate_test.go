package decide

import (
	"bytes"
	"testing"
	"time"
)

func testGate(t testing.TB) (*Gate, GateCredID) {
	t.Helper()
	g := new(Gate)
	if err := g.SetKey(bytes.Repeat([]byte{7}, GateKeyMin)); err != nil {
		t.Fatal(err)
	}
	id := GateCredID{1, 2, 3}
	g.SetCredentials(map[GateCredID]GateEntry{id: {User: "alice", Epoch: 3, UserHeader: []byte("alice")}})
	return g, id
}

func TestGateSession(t *testing.T) {
	g, id := testGate(t)
	t0 := time.Unix(1_700_000_000, 0)
	tok := g.Issue(id, 3, t0.Add(time.Hour))
	if len(tok) != GateTokenLen {
		t.Fatalf("token is %d characters, want %d", len(tok), GateTokenLen)
	}
	other := new(Gate)
	_ = other.SetKey(bytes.Repeat([]byte{8}, GateKeyMin))
	other.SetCredentials(map[GateCredID]GateEntry{id: {User: "alice", Epoch: 3}})
	flipped := []byte(tok)
	flipped[40] ^= 1
	if flipped[40] == '_'+1 || flipped[40] == '-'+1 {
		flipped[40] = 'A'
	}
	cases := []struct {
		name  string
		gate  *Gate
		token string
		now   time.Time
		want  bool
	}{
		{"valid", g, tok, t0, true},
		{"expired", g, tok, t0.Add(time.Hour), false},
		{"other key", other, tok, t0, false},
		{"wrong epoch", g, g.Issue(id, 2, t0.Add(time.Hour)), t0, false},
		{"unknown credential", g, g.Issue(GateCredID{9}, 3, t0.Add(time.Hour)), t0, false},
		{"flipped bit", g, string(flipped), t0, false},
		{"empty", g, "", t0, false},
		{"short", g, tok[:GateTokenLen-1], t0, false},
		{"no key", new(Gate), tok, t0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e, ok := tc.gate.Check([]byte(tc.token), tc.now)
			if ok != tc.want {
				t.Fatalf("Check = %v, want %v", ok, tc.want)
			}
			if ok && e.User != "alice" {
				t.Errorf("user %q, want alice", e.User)
			}
		})
	}
}

func TestGateRevocation(t *testing.T) {
	g, id := testGate(t)
	t0 := time.Unix(1_700_000_000, 0)
	tok := []byte(g.Issue(id, 3, t0.Add(time.Hour)))
	if _, ok := g.Check(tok, t0); !ok {
		t.Fatal("fresh session refused")
	}
	g.SetCredentials(map[GateCredID]GateEntry{id: {User: "alice", Epoch: 4}})
	if _, ok := g.Check(tok, t0); ok {
		t.Error("session accepted after sign-out everywhere")
	}
	g.SetCredentials(map[GateCredID]GateEntry{})
	if _, ok := g.Check([]byte(g.Issue(id, 4, t0.Add(time.Hour))), t0); ok {
		t.Error("session accepted after its credential was revoked")
	}
}

func TestGateKeyLength(t *testing.T) {
	if err := new(Gate).SetKey(make([]byte, GateKeyMin-1)); err == nil {
		t.Errorf("a %d-byte key was accepted", GateKeyMin-1)
	}
}

func TestGateCheckAllocs(t *testing.T) {
	g, id := testGate(t)
	t0 := time.Unix(1_700_000_000, 0)
	tok := []byte(g.Issue(id, 3, t0.Add(time.Hour)))
	if n := testing.AllocsPerRun(1000, func() { g.Check(tok, t0) }); n != 0 {
		t.Errorf("Check allocates %v times, want 0", n)
	}
}

func BenchmarkGateCheck(b *testing.B) {
	g, id := testGate(b)
	live := map[GateCredID]GateEntry{}
	for i := range MaxGateCredentials {
		live[GateCredID{byte(i), byte(i >> 8), 0xff}] = GateEntry{User: "u"}
	}
	live[id] = GateEntry{User: "alice", Epoch: 3}
	g.SetCredentials(live)
	t0 := time.Unix(1_700_000_000, 0)
	valid := []byte(g.Issue(id, 3, t0.Add(time.Hour)))
	forged := bytes.Clone(valid)
	forged[50] = 'A'
	if forged[50] == valid[50] {
		forged[50] = 'B'
	}
	for _, bc := range []struct {
		name string
		tok  []byte
	}{{"valid", valid}, {"forged", forged}, {"none", nil}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				g.Check(bc.tok, t0)
			}
		})
	}
}

func FuzzGateToken(f *testing.F) {
	g, id := testGate(f)
	t0 := time.Unix(1_700_000_000, 0)
	f.Add(g.Issue(id, 3, t0.Add(time.Hour)))
	f.Add("")
	f.Fuzz(func(t *testing.T, tok string) {
		e, ok := g.Check([]byte(tok), t0)
		if ok && (e.User != "alice" || len(tok) != GateTokenLen) {
			t.Fatalf("accepted %q as %q", tok, e.User)
		}
	})
}
