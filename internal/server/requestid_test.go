package server

import (
	"strings"
	"testing"
	"time"

	"github.com/doorman/doorman/internal/api"
	"github.com/doorman/doorman/internal/requestid"
)

// TestFailureRequestID: a failure reported twice with one request id (the
// learning listener counted it first, or the app retried) counts once; the
// answer says so and shows the address's state.
func TestFailureRequestID(t *testing.T) {
	f := newFixture(t, "", "")
	f.api.Seen = requestid.New(100, time.Minute)
	const id = "0f3a9c1d2b4e5f60718293a4b5c6d7e8"
	for i, want := range []struct {
		failures  float64
		duplicate any
	}{{1, nil}, {1, true}, {1, true}} {
		status, out := f.apiReq("POST", "/v1/failures", `{"ip":"203.0.113.7","request_id":"`+id+`"}`)
		if status != 200 || out["failures"] != want.failures || out["duplicate"] != want.duplicate {
			t.Fatalf("report %d: %d %v, want failures %v duplicate %v", i, status, out, want.failures, want.duplicate)
		}
	}
	if _, out := f.apiReq("POST", "/v1/failures", `{"ip":"203.0.113.7","request_id":"other"}`); out["failures"] != float64(2) {
		t.Fatalf("another id: %v, want 2 failures", out)
	}
	if _, out := f.apiReq("POST", "/v1/failures", `{"ip":"203.0.113.7"}`); out["failures"] != float64(3) {
		t.Fatalf("no id: %v, want 3 failures", out)
	}
	for _, tc := range []struct{ name, id, want string }{
		{"long", strings.Repeat("a", requestid.MaxLen+1), `"request_id": longer than 128 bytes`},
		{"control", `a\u001bb`, `"request_id": byte 0x1b at 1`},
		{"space", "a b", `"request_id": byte 0x20 at 1`},
		{"non-ASCII", "caf\u00e9", `"request_id": byte 0xc3 at 3`},
	} {
		status, out := f.apiReq("POST", "/v1/failures", `{"ip":"203.0.113.8","request_id":"`+tc.id+`"}`)
		if e, _ := out["error"].(string); status != 400 || !strings.Contains(e, tc.want) {
			t.Errorf("%s id: %d %v, want 400 %s", tc.name, status, out, tc.want)
		}
	}
	if _, out := f.apiReq("POST", "/v1/failures", `{"ip":"203.0.113.8"}`); out["failures"] != float64(1) {
		t.Fatalf("after refused ids: %v, want 1 failure (they counted none)", out)
	}
}

// TestMaxLen: the ids the API accepts are the ids Seen remembers.
func TestMaxLen(t *testing.T) {
	if requestid.MaxLen != api.MaxRequestID {
		t.Fatalf("requestid.MaxLen %d, api.MaxRequestID %d", requestid.MaxLen, api.MaxRequestID)
	}
}
