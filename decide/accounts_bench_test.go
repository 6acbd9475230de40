package decide

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"
)

// Benchmarks of the account side at the default DOORMAN_MAX_ACCOUNTS
// (100k): the pre-authentication check (/v1/attempts' core), a failure,
// token verification, and the heap held per account.

const benchAccounts = 100_000

func benchNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("user%07d", i)
	}
	return out
}

// fullAccounts returns Accounts at the default policy holding n accounts
// with one failure each, and locked, the first of them, locked.
func fullAccounts(n int) (a *Accounts, names []string, locked string) {
	p := AccountPolicy{MaxFailures: 10, FindTime: time.Hour, LockTime: 15 * time.Minute, LockFactor: 2,
		MaxLockTime: 168 * time.Hour, DeviceMaxFailures: 5}
	a = NewAccounts(p, n)
	names = benchNames(n)
	for i, u := range names {
		a.Fail(u, Device{}, benchNow.Add(time.Duration(i)))
	}
	for range 9 {
		a.Fail(names[0], Device{}, benchNow)
	}
	return a, names, names[0]
}

func BenchmarkNormalizeUsername(b *testing.B) {
	for _, tc := range []struct{ name, in string }{
		{"ascii", "Administrator "}, {"fullwidth", "ａｄｍｉｎｉｓｔｒａｔｏｒ"}, {"accented", "Rémy.Müller"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := NormalizeUsername(tc.in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkAccountCheck is Accounts.Check on a full table: the one locked
// account, and random tracked and untracked names cycled through 64k, as a
// spray of invented names is.
func BenchmarkAccountCheck(b *testing.B) {
	a, names, locked := fullAccounts(benchAccounts)
	now := benchNow.Add(time.Minute)
	b.Run("locked", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if a.Check(locked, Device{}, now).Allow {
				b.Fatal("allowed")
			}
		}
	})
	r := rand.New(rand.NewPCG(5, 5))
	tracked := make([]string, 1<<16)
	untracked := make([]string, 1<<16)
	for i := range tracked {
		tracked[i] = names[1+r.IntN(len(names)-1)]
		untracked[i] = fmt.Sprintf("nobody%07d", i)
	}
	for _, set := range []struct {
		name  string
		names []string
	}{{"tracked-random", tracked}, {"untracked-random", untracked}} {
		b.Run(set.name, func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if !a.Check(set.names[i&(len(set.names)-1)], Device{}, now).Allow {
					b.Fatal("refused")
				}
				i++
			}
		})
	}
}

// BenchmarkAccountFail is a failure for a new name on a full table (each
// evicts the least recently failing) and for one account again and again.
func BenchmarkAccountFail(b *testing.B) {
	a, names, _ := fullAccounts(benchAccounts)
	b.Run("new-name-full-table", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		now := benchNow.Add(time.Minute)
		for b.Loop() {
			a.Fail(fmt.Sprintf("spray%09d", i), Device{}, now.Add(time.Duration(i)))
			i++
		}
	})
	b.Run("same-account", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		now := benchNow.Add(2 * time.Minute)
		for b.Loop() {
			a.Fail(names[len(names)-1], Device{}, now.Add(time.Duration(i)))
			i++
		}
	})
}

func BenchmarkDeviceToken(b *testing.B) {
	k := testKey(b, 1)
	tok := k.Issue("admin", benchNow.Add(720*time.Hour), [8]byte{1})
	b.Run("issue", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			k.Issue("admin", benchNow.Add(720*time.Hour), [8]byte{1})
		}
	})
	b.Run("verify", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := k.Verify(tok, "admin", benchNow); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkAccountMemory fills Accounts of the default size (100k) and
// reports the Go heap held per account (B/account): with one failure each,
// as a spray of invented names leaves the table, and with 9 each (a full
// window short of a lock at the default 10).
func BenchmarkAccountMemory(b *testing.B) {
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	names := benchNames(benchAccounts)
	for _, per := range []int{1, 9} {
		b.Run(fmt.Sprintf("failures=%d", per), func(b *testing.B) {
			for b.Loop() {
				before := heap()
				a := NewAccounts(AccountPolicy{MaxFailures: 10, FindTime: time.Hour, LockTime: 15 * time.Minute,
					LockFactor: 2, MaxLockTime: 168 * time.Hour, DeviceMaxFailures: 5}, benchAccounts)
				for j := range per {
					for i, u := range names {
						a.Fail(u, Device{}, benchNow.Add(time.Duration(j*benchAccounts+i)))
					}
				}
				b.ReportMetric(float64(heap()-before)/benchAccounts, "B/account")
				runtime.KeepAlive(a)
			}
		})
	}
}
