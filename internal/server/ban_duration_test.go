package server

import (
	"strconv"
	"testing"
	"time"

	"github.com/doorman/doorman/internal/api"
)

// A manual ban's duration is from 1s to MaxManualBan: "1ns" was answered 201
// with a ban over before the next request.
func TestBanDurationBounds(t *testing.T) {
	tests := []struct {
		duration string
		want     int
	}{
		{"1ns", 400},
		{"999ms", 400},
		{"0s", 400},
		{"-1s", 400},
		{"1s", 201},
		{"90s", 201},
		{api.MaxManualBan.String(), 201},
		{(api.MaxManualBan + time.Second).String(), 400},
	}
	for i, tc := range tests {
		t.Run(tc.duration, func(t *testing.T) {
			f := newFixture(t, "", "")
			ip := "192.0.2." + strconv.Itoa(i+1)
			status, out := f.apiReq("POST", "/v1/bans", `{"ip":"`+ip+`","duration":"`+tc.duration+`"}`)
			if status != tc.want {
				t.Fatalf("duration %q: status %d, want %d (%v)", tc.duration, status, tc.want, out)
			}
			records := f.core.Stats(f.now).BanRecords
			if tc.want == 400 {
				if msg, _ := out["error"].(string); msg == "" || records != 0 {
					t.Fatalf("duration %q: error %q, %d ban records; want a message and none", tc.duration, msg, records)
				}
				return
			}
			if got, want := out["until"], f.now.Add(mustDuration(t, tc.duration)).Format(time.RFC3339); got != want {
				t.Fatalf("duration %q: until %v, want %v", tc.duration, got, want)
			}
			if resp := f.decideReq(tcp("127.0.0.1"), "X-Real-IP", ip); resp.StatusCode() != 403 {
				t.Fatalf("duration %q: decision %d, want 403", tc.duration, resp.StatusCode())
			}
		})
	}
}

func mustDuration(t *testing.T, s string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}
