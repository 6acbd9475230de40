package test

import (
	"net/http"
	"testing"
)

// DOORMAN_EXPOSE_REASON turns X-Doorman-* on for /forward-auth; without it a
// Traefik or Caddy client learns nothing from a denial's headers.
func TestExposeReasonSetting(t *testing.T) {
	for _, tc := range []struct {
		expose string
		want   string
	}{{"", ""}, {"false", ""}, {"true", "not-allowlisted"}} {
		env := map[string]string{"DOORMAN_ALLOW": "192.0.2.0/24"}
		if tc.expose != "" {
			env["DOORMAN_EXPOSE_REASON"] = tc.expose
		}
		d := startDoorman(t, env)
		req, _ := http.NewRequest("GET", "http://"+d.DecideAddr+"/forward-auth", nil)
		req.Header.Set("X-Forwarded-For", "198.51.100.7")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("X-Doorman-Reason"); resp.StatusCode != 403 || got != tc.want {
			t.Errorf("DOORMAN_EXPOSE_REASON=%q: %d, X-Doorman-Reason %q, want 403 and %q", tc.expose, resp.StatusCode, got, tc.want)
		}
		d.Stop(t)
	}
}
