package test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

// gateNode is one doorman of a gate cluster, reached directly on its gate
// listener (clients from 127.0.0.5 and up: not trusted proxies, so the peer
// is the client).
func gateNode(t *testing.T, url, prefix, origin string) *gateSite {
	t.Helper()
	port := freePort(t)
	d := startDoorman(t, map[string]string{"DOORMAN_REDIS_URL": url, "DOORMAN_REDIS_PREFIX": prefix,
		"DOORMAN_GATE_ADDR": "127.0.0.1:" + strconv.Itoa(port), "DOORMAN_GATE_ORIGINS": origin,
		"DOORMAN_TRUSTED_PROXIES": "127.0.0.1/32"})
	return &gateSite{d: d, port: port, origin: origin}
}

// gateVerdict asks n's /gate for the client 127.0.0.5 holding session.
func gateVerdict(t *testing.T, n *gateSite, session string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://doorman/gate", nil)
	req.Header.Set("X-Real-IP", "127.0.0.5")
	req.Header.Set("X-Doorman-Gate", session)
	resp, err := httpClientFor(n.d.DecideAddr).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func sessionOf(t *testing.T, c *http.Client, origin string) string {
	t.Helper()
	u, _ := url.Parse(origin)
	for _, ck := range c.Jar.Cookies(u) {
		if ck.Name == "doorman_gate" {
			return ck.Value
		}
	}
	t.Fatal("no doorman_gate cookie")
	return ""
}

// waitGateVerdict polls n's /gate until it answers want, within propagationLimit.
func waitGateVerdict(t *testing.T, n *gateSite, session string, want int, what string) {
	t.Helper()
	deadline := time.Now().Add(propagationLimit)
	for {
		got := gateVerdict(t, n, session)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: /gate on %s answers %d, want %d within %v", what, n.d.DecideAddr, got, want, propagationLimit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestGateCluster: two doormen on one Redis share the gate key, the
// credentials and the used TOTP steps: enrolled through one, a person signs
// in through the other; a code used on one is refused on the other; a
// revocation through one ends the session on both.
func TestGateCluster(t *testing.T) {
	redisURL, prefix := clusterRedis(t), clusterPrefix(t)
	origin := "http://localhost:1" // the doormen are reached directly
	a := gateNode(t, redisURL, prefix, origin)
	b := gateNode(t, redisURL, prefix, origin)

	ca := a.browser(t, "127.0.0.5")
	now := time.Now()
	secret := a.enroll(t, ca, "alice", now)
	enrolled := sessionOf(t, ca, origin)
	waitGateVerdict(t, b, enrolled, http.StatusNoContent, "the session made through a, on b")

	next := totpCode(t, secret, now.Add(30*time.Second))
	cb := b.browser(t, "127.0.0.6")
	if p := b.signIn(t, cb, "alice", next); p.status != http.StatusSeeOther {
		t.Fatalf("TOTP sign-in on b with the credential enrolled on a: %d\n%s", p.status, p.body)
	}
	if p := a.signIn(t, a.browser(t, "127.0.0.7"), "alice", next); p.status != http.StatusUnauthorized {
		t.Errorf("the code used on b, replayed on a: %d, want 401", p.status)
	}
	signedIn := sessionOf(t, cb, origin)
	if got := gateVerdict(t, a, signedIn); got != http.StatusNoContent {
		t.Errorf("b's session on a: %d, want 204", got)
	}

	status, body := a.d.API(t, "GET", "/v1/gate/credentials", nil)
	var creds struct{ Credentials []struct{ ID string } }
	if status != 200 || json.Unmarshal(body, &creds) != nil || len(creds.Credentials) != 1 {
		t.Fatalf("GET /v1/gate/credentials on a: %d %s", status, body)
	}
	if status, body := b.d.API(t, "DELETE", "/v1/gate/credentials/"+creds.Credentials[0].ID, nil); status != 200 {
		t.Fatalf("revoking through b: %d %s", status, body)
	}
	if got := gateVerdict(t, b, signedIn); got != http.StatusUnauthorized {
		t.Errorf("session on b right after revoking through b: %d, want 401", got)
	}
	waitGateVerdict(t, a, enrolled, http.StatusUnauthorized, "revoked through b, on a")
	if log := a.d.Log(t) + b.d.Log(t); strings.Contains(log, secret) {
		t.Error("the TOTP secret is in a doorman's log")
	}
}
