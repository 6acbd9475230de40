package cluster

import (
	"fmt"
	"testing"
	"time"

	"github.com/doorman/doorman/decide"
)

// escalationCases are fed both to decide.Policy.Duration and to the Lua rule
// the scripts use, on a real redis-server, so the two cannot drift.
var escalationCases = []struct {
	ban, max time.Duration
	factor   float64
	count    int
}{
	{time.Hour, 168 * time.Hour, 2, 1},
	{time.Hour, 168 * time.Hour, 2, 2},
	{time.Hour, 168 * time.Hour, 2, 8},   // 128h
	{time.Hour, 168 * time.Hour, 2, 9},   // capped
	{time.Hour, 168 * time.Hour, 2, 200}, // far past the cap
	{time.Hour, 168 * time.Hour, 1, 50},  // factor 1: never grows
	{90 * time.Second, 24 * time.Hour, 1.5, 6},
	{10 * time.Minute, 87600 * time.Hour, 3, 12},
	{time.Second, time.Hour, 1e300, 3},   // overflows to +Inf: capped
	{time.Minute, time.Hour, 2, 1 << 20}, // huge count
}

func TestEscalationGoEqualsLua(t *testing.T) {
	rdb := rawClient(t, redisURL(t))
	for _, tc := range escalationCases {
		t.Run(fmt.Sprintf("%v×%v^%d/%v", tc.ban, tc.factor, tc.count-1, tc.max), func(t *testing.T) {
			p := decide.Policy{BanTime: tc.ban, BanFactor: tc.factor, MaxBanTime: tc.max}
			want := p.Duration(tc.count).Milliseconds()
			got, err := durationScript.Run(ctx, rdb, []string{"k", "k", "k", "k"},
				tc.count, ms(tc.ban), tc.factor, ms(tc.max)).Int64()
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("Lua %d ms, Go %d ms", got, want)
			}
		})
	}
}
