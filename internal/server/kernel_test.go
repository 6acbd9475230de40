package server

import (
	"testing"

	"github.com/doorman/doorman/decide"
)

// TestKernelField: with kernel bans on, the answers that show a ban say
// whether it is in the kernel; with them off, they have no such field.
func TestKernelField(t *testing.T) {
	f := newFixture(t, "", "")
	for i := 0; i < 3; i++ {
		if _, out := f.apiReq("POST", "/v1/failures", `{"ip":"203.0.113.7"}`); out["kernel"] != nil {
			t.Fatalf("kernel bans off: failure answer %v has a kernel field", out)
		}
	}
	if _, out := f.apiReq("POST", "/v1/bans", `{"ip":"203.0.113.8"}`); out["kernel"] != nil {
		t.Fatalf("kernel bans off: ban answer %v has a kernel field", out)
	}

	held := map[string]bool{"198.51.100.1/32": true}
	f.api.Kernel = func(b decide.Ban) bool { return held[b.Key.String()] }
	for _, tc := range []struct {
		name, method, path, body string
		want                     any
	}{
		{"not banned yet", "POST", "/v1/failures", `{"ip":"198.51.100.1"}`, nil},
		{"second failure", "POST", "/v1/failures", `{"ip":"198.51.100.1"}`, nil},
		{"ban in kernel", "POST", "/v1/failures", `{"ip":"198.51.100.1"}`, true},
		{"manual ban, write failed", "POST", "/v1/bans", `{"ip":"198.51.100.2"}`, false},
		{"manual ban in kernel", "POST", "/v1/bans", `{"ip":"198.51.100.1"}`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, out := f.apiReq(tc.method, tc.path, tc.body)
			if got := out["kernel"]; got != tc.want {
				t.Fatalf("kernel: got %v, want %v (answer %v)", got, tc.want, out)
			}
		})
	}
}
