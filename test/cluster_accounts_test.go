package test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// accountEnv turns accounts on: three failures lock.
var accountEnv = map[string]string{"DOORMAN_ACCOUNT_MAX_FAILURES": "3"}

// attempt asks d's /v1/attempts for user from a fresh address.
func attempt(t *testing.T, d *Doorman, user string) (allow bool, reason string) {
	t.Helper()
	code, body := d.API(t, "POST", "/v1/attempts", map[string]string{"ip": "192.0.2.200", "username": user})
	var out struct {
		Allow  bool   `json:"allow"`
		Reason string `json:"reason"`
	}
	if code != http.StatusOK || json.Unmarshal(body, &out) != nil {
		t.Fatalf("POST /v1/attempts %s: %d %s", user, code, body)
	}
	return out.Allow, out.Reason
}

// waitAttempt polls d's /v1/attempts for user until its answer is allow (or
// locked), within limit.
func waitAttempt(t *testing.T, d *Doorman, name, user string, allow bool, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		got, reason := attempt(t, d, user)
		if got == allow {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: /v1/attempts %s: allow %v (%s) after %v, want %v; log:\n%s", name, user, got, reason, limit, allow, d.Log(t))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// lockFailures sends three failures of user through d, from three addresses.
func lockFailures(t *testing.T, d *Doorman, user string) {
	t.Helper()
	for i := range 3 {
		code, body := d.API(t, "POST", "/v1/failures", map[string]string{"ip": fmt.Sprintf("198.51.100.%d", 10+i), "username": user})
		if code != http.StatusOK {
			t.Fatalf("failure %d of %s: %d %s", i+1, user, code, body)
		}
	}
	if allow, _ := attempt(t, d, user); allow {
		t.Fatalf("%s not locked after three failures:\n%s", user, d.Log(t))
	}
}

// lockKey is the Redis key of user's lock hash (cluster.Accounts.akeys).
func lockKey(prefix, user string) string {
	h := sha256.Sum256([]byte(user))
	return prefix + "alock:{" + hex.EncodeToString(h[:12]) + "}"
}

// A lock made while Redis is unreachable reaches the other doormen when it is
// back, even empty (a restart without persistence), and a doorman started
// later learns it.
func TestClusterLockDuringOutage(t *testing.T) {
	r := startRedisServer(t, 0)
	prefix := clusterPrefix(t)
	ds := startCluster(t, 2, r.URL, prefix, accountEnv)
	r.Kill()
	for _, d := range ds {
		waitMetric(t, d, "doorman_redis_up", 0, 5*time.Second)
	}
	lockFailures(t, ds[0], "admin")
	if allow, _ := attempt(t, ds[1], "admin"); !allow {
		t.Fatal("b holds a lock it cannot have heard of")
	}
	if err := r.Restart(); err != nil { // same port, empty
		t.Fatal(err)
	}
	for _, d := range ds {
		waitMetric(t, d, "doorman_redis_up", 1, 10*time.Second)
	}
	waitAttempt(t, ds[1], "b after the outage", "admin", false, 3*time.Second)
	late := startCluster(t, 1, r.URL, prefix, accountEnv)[0]
	waitAttempt(t, late, "a doorman started later", "admin", false, 3*time.Second)
}

// An unlock made while Redis is unreachable is answered as not yet shared,
// and holds once Redis is back: on both doormen, and in Redis, whichever of
// the two syncs first.
func TestClusterUnlockDuringOutage(t *testing.T) {
	r := startRedisServer(t, 0)
	prefix := clusterPrefix(t)
	ds := startCluster(t, 2, r.URL, prefix, accountEnv)
	lockFailures(t, ds[0], "admin")
	waitAttempt(t, ds[1], "b learns the lock", "admin", false, 3*time.Second)
	code, body := ds[0].API(t, "DELETE", "/v1/accounts/admin", nil)
	if code != http.StatusNoContent {
		t.Fatalf("unlock with Redis up: %d %s, want 204", code, body)
	}
	waitAttempt(t, ds[1], "b learns the unlock", "admin", true, 3*time.Second)
	lockFailures(t, ds[0], "admin") // locked again, on both
	waitAttempt(t, ds[1], "b learns the second lock", "admin", false, 3*time.Second)

	r.Kill()
	for _, d := range ds {
		waitMetric(t, d, "doorman_redis_up", 0, 5*time.Second)
	}
	code, body = ds[0].API(t, "DELETE", "/v1/accounts/admin", nil)
	var out map[string]any
	if code != http.StatusOK || json.Unmarshal(body, &out) != nil || out["shared"] != false {
		t.Fatalf("unlock during the outage: %d %s, want 200 {\"shared\":false}", code, body)
	}
	if err := r.Restart(); err != nil { // empty: b pushes the lock it holds
		t.Fatal(err)
	}
	for _, d := range ds {
		waitMetric(t, d, "doorman_redis_up", 1, 10*time.Second)
	}
	rc := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(r.Port)})
	defer rc.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		inRedis, _ := rc.Exists(context.Background(), lockKey(prefix, "admin")).Result()
		pending := metricValue(t, ds[0], "doorman_cluster_pending_unlocks")
		a, _ := attempt(t, ds[0], "admin")
		b, _ := attempt(t, ds[1], "admin")
		if inRedis == 0 && pending == 0 && a && b {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("unlock undone: lock in Redis %d, queued %v, a allows %v, b allows %v\na:\n%s\nb:\n%s",
				inRedis, pending, a, b, ds[0].Log(t), ds[1].Log(t))
		}
		time.Sleep(10 * time.Millisecond)
	}
}
