package test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// What is in force when a change is acknowledged is what a restart finds,
// even when concurrent changes of the same keys race and doorman is killed
// with SIGKILL right after: the state file must not commit them in another
// order than memory made them (a stale record put back, a fresh one deleted).
//
// Each round races two requests on the same keys of a tiny ban table
// (DOORMAN_MAX_BANS=2, every failure bans: DOORMAN_MAX_FAILURES=1), reads
// GET /v1/bans once both are answered, kills doorman, restarts it and
// requires the same bans (key, end, reason, count). The assertion holds
// whatever the eviction rule decides: it compares doorman with itself.
func TestRaceKillKeepsAcknowledged(t *testing.T) {
	rounds := 40
	if s := os.Getenv("DOORMAN_RACE_ROUNDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 1000 {
			t.Fatalf("DOORMAN_RACE_ROUNDS=%q: want 1 to 1000", s)
		}
		rounds = n
	}
	d := startDoorman(t, map[string]string{"DOORMAN_MAX_BANS": "2", "DOORMAN_MAX_FAILURES": "1"})

	// Each variant sets the table up with setup, then sends race's two
	// requests at once. Addresses are the round's: .1 is 10.88.<round>.1.
	variants := []struct {
		name  string
		setup []raceStep
		race  [2]raceStep
	}{
		{"evict: manual, manual; manual .3 ‖ manual re-ban .1",
			[]raceStep{{"ban", 1, "1h"}, {"ban", 2, "1h"}}, [2]raceStep{{"ban", 3, "2h"}, {"ban", 1, "3h"}}},
		{"evict: failure, failure; failure .3 ‖ manual re-ban .1",
			[]raceStep{{"fail", 1, ""}, {"fail", 2, ""}}, [2]raceStep{{"fail", 3, ""}, {"ban", 1, "3h"}}},
		{"evict: manual, failure; failure .3 ‖ manual re-ban .1",
			[]raceStep{{"ban", 1, "1h"}, {"fail", 2, ""}}, [2]raceStep{{"fail", 3, ""}, {"ban", 1, "3h"}}},
		{"evict: failure, failure; failure .3 ‖ failure .1",
			[]raceStep{{"fail", 1, ""}, {"fail", 2, ""}}, [2]raceStep{{"fail", 3, ""}, {"fail", 1, ""}}},
		{"one key: manual; unban ‖ manual re-ban",
			[]raceStep{{"ban", 1, "1h"}}, [2]raceStep{{"unban", 1, ""}, {"ban", 1, "2h"}}},
		{"one key: failure; unban ‖ failure",
			[]raceStep{{"fail", 1, ""}}, [2]raceStep{{"unban", 1, ""}, {"fail", 1, ""}}},
	}

	type tally struct{ rounds, mismatched, lost, changed, resurrected int }
	byVariant := make([]tally, len(variants))
	statuses := map[string]int{} // "request → status": how often, for the log
	for r := range rounds {
		v := variants[r%len(variants)]
		clearBans(t, d)
		for _, st := range v.setup {
			q := st.req(r)
			if code, err := q.send(d); err != nil || !q.ok(code) {
				t.Fatalf("round %d (%s): setup %s: status %d, %v", r, v.name, q, code, err)
			}
		}
		pair := [2]raceReq{v.race[0].req(r), v.race[1].req(r)}
		var (
			wg    sync.WaitGroup
			start = make(chan struct{})
			codes [2]int
			errs  [2]error
		)
		for i := range pair {
			wg.Go(func() {
				<-start
				codes[i], errs[i] = pair[i].send(d)
			})
		}
		close(start)
		wg.Wait()
		for i, q := range pair {
			if errs[i] != nil || !q.ok(codes[i]) {
				t.Fatalf("round %d (%s): %s: status %d, %v", r, v.name, q, codes[i], errs[i])
			}
			statuses[fmt.Sprintf("%s → %d", q.kind(), codes[i])]++
		}

		before := raceBans(t, d)
		d.Kill(t)
		d.Restart(t)
		after := raceBans(t, d)

		tl := &byVariant[r%len(variants)]
		tl.rounds++
		bad := false
		for k, b := range before {
			switch a, ok := after[k]; {
			case !ok:
				tl.lost++
				bad = true
				t.Errorf("round %d (%s): %s listed after the answers, gone after kill -9 and restart", r, v.name, b)
			case a != b:
				tl.changed++
				bad = true
				t.Errorf("round %d (%s): %s listed after the answers, %s after kill -9 and restart", r, v.name, b, a)
			}
		}
		for k, a := range after {
			if _, ok := before[k]; !ok {
				tl.resurrected++
				bad = true
				t.Errorf("round %d (%s): %s not listed after the answers, listed after kill -9 and restart", r, v.name, a)
			}
		}
		if bad {
			tl.mismatched++
		}
	}
	total := 0
	for i, tl := range byVariant {
		total += tl.mismatched
		t.Logf("%-55s %2d rounds, %d differ after restart (lost %d, changed %d, back from the dead %d)",
			variants[i].name, tl.rounds, tl.mismatched, tl.lost, tl.changed, tl.resurrected)
	}
	keys := make([]string, 0, len(statuses))
	for k := range statuses {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		t.Logf("raced %s: %d", k, statuses[k])
	}
	t.Logf("%d rounds, %d with a difference after kill -9", rounds, total)
}

// raceReq is one API request of the race test.
type raceReq struct {
	method, path, body string
	want               []int // statuses that acknowledge (or rightly refuse) it
}

// raceStep is a request of the race test on the round's i-th address: op
// "ban" (manual, for d), "fail" (a failure) or "unban".
type raceStep struct {
	op  string
	i   int
	dur string
}

func (st raceStep) req(round int) raceReq {
	ip := fmt.Sprintf("10.88.%d.%d", round, st.i)
	switch st.op {
	case "ban":
		// 409: a table full of manual bans refuses a new one.
		return raceReq{"POST", "/v1/bans", `{"ip":"` + ip + `","duration":"` + st.dur + `","reason":"race"}`, []int{201, 409}}
	case "fail":
		return raceReq{"POST", "/v1/failures", `{"ip":"` + ip + `","username":"admin"}`, []int{200}}
	}
	return raceReq{"DELETE", "/v1/bans/" + ip, "", []int{204, 404}}
}

func (q raceReq) String() string { return q.method + " " + q.path + " " + q.body }

// kind names the request without its address, for the tally.
func (q raceReq) kind() string {
	if q.path == "/v1/failures" {
		return "failure"
	}
	if q.method == "DELETE" {
		return "unban"
	}
	return "manual ban"
}

func (q raceReq) ok(code int) bool {
	for _, w := range q.want {
		if code == w {
			return true
		}
	}
	return false
}

// send sends q to d's API; it may run in any goroutine.
func (q raceReq) send(d *Doorman) (int, error) {
	var body io.Reader
	if q.body != "" {
		body = strings.NewReader(q.body)
	}
	req, err := http.NewRequest(q.method, "http://doorman"+q.path, body)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := d.Client().Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// raceBan is one listed ban, as compared before and after the restart.
type raceBan struct {
	Key    string `json:"key"`
	Until  string `json:"until"`
	Reason string `json:"reason"`
	Count  int    `json:"count"`
}

func (b raceBan) String() string {
	return fmt.Sprintf("%s (until %s, %s, count %d)", b.Key, b.Until, b.Reason, b.Count)
}

// raceBans returns GET /v1/bans by key.
func raceBans(t *testing.T, d *Doorman) map[string]raceBan {
	t.Helper()
	code, body := d.API(t, "GET", "/v1/bans", nil)
	if code != 200 {
		t.Fatalf("GET /v1/bans: status %d %s", code, body)
	}
	var out struct{ Bans []raceBan }
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("GET /v1/bans: %v in %s", err, body)
	}
	m := map[string]raceBan{}
	for _, b := range out.Bans {
		m[b.Key] = b
	}
	return m
}

// clearBans lifts every listed ban (which also forgets its escalation
// count) and checks that none is left.
func clearBans(t *testing.T, d *Doorman) {
	t.Helper()
	for k := range raceBans(t, d) {
		if code, body := d.API(t, "DELETE", "/v1/bans/"+k, nil); code != 204 {
			t.Fatalf("DELETE /v1/bans/%s: status %d %s", k, code, body)
		}
	}
	if left := raceBans(t, d); len(left) != 0 {
		t.Fatalf("bans left after lifting them all: %v", left)
	}
}
