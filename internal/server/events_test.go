package server

import (
	"fmt"
	"testing"
	"time"
)

func TestEventsEndpoint(t *testing.T) {
	f := newFixture(t, "", "")
	f.api.Events = f.api.Service.NewHistory(3)
	f.api.Token = "tok"
	auth := []string{"Authorization", "Bearer tok"}
	for _, ip := range []string{"192.0.2.1", "192.0.2.2", "10.0.0.0/8", "192.0.2.3"} {
		if code, out := f.apiReq("POST", "/v1/bans", `{"ip":"`+ip+`","duration":"1h"}`, auth...); code != 201 {
			t.Fatalf("ban %s: %d %v", ip, code, out)
		}
		f.now = f.now.Add(time.Second)
	}
	if code, out := f.apiReq("DELETE", "/v1/bans/10.0.0.0/8", "", auth...); code != 204 {
		t.Fatalf("unban: %d %v", code, out)
	}
	keys := func(out map[string]any) string {
		var s []string
		for _, e := range out["events"].([]any) {
			m := e.(map[string]any)
			s = append(s, fmt.Sprint(m["type"], " ", m["key"], " ", m["source"], " ", m["until"] != nil))
		}
		return fmt.Sprint(s)
	}
	for _, tc := range []struct {
		uri   string
		code  int
		want  string
		error bool
	}{
		{"/v1/events", 200, "[range_unban 10.0.0.0/8 manual false ban 192.0.2.3/32 manual true range_ban 10.0.0.0/8 manual true]", false},
		{"/v1/events?limit=1", 200, "[range_unban 10.0.0.0/8 manual false]", false},
		{"/v1/events?limit=0", 400, "", true},
		{"/v1/events?limit=x", 400, "", true},
		{"/v1/events?limit=-1", 400, "", true},
	} {
		code, out := f.apiReq("GET", tc.uri, "", auth...)
		if code != tc.code {
			t.Errorf("%s: status %d, want %d (%v)", tc.uri, code, tc.code, out)
			continue
		}
		if tc.error {
			if out["error"] == nil {
				t.Errorf("%s: no error message: %v", tc.uri, out)
			}
			continue
		}
		if got := keys(out); got != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.uri, got, tc.want)
		}
	}
	if code, _ := f.apiReq("GET", "/v1/events", ""); code != 401 {
		t.Errorf("without the token: %d, want 401", code)
	}
	if code, _ := f.apiReq("POST", "/v1/events", "", auth...); code != 405 {
		t.Errorf("POST: %d, want 405", code)
	}
}
