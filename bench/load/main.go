// Command load is the benchmark's driver for everything wrk cannot do: it
// writes the random list files, loads bans through the API, measures webhook
// ingest, and measures how soon a ban is in force after the webhook's answer.
// It talks to loopback only.
//
//	load lists  -dir DIR -deny N -allow N          deny.txt and allow.txt
//	load bans   -api ADDR -n N -c C                POST /v1/bans for N distinct addresses
//	load ingest -api ADDR -n N -c C                POST /v1/failures from N distinct addresses
//	load acklat -api ADDR -decide ADDR -n N -failures F
//
// Results are printed as one line of key=value pairs.
package main

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: load lists|bans|ingest|acklat [flags]")
		os.Exit(2)
	}
	cmd, args := os.Args[1], os.Args[2:]
	fs := flag.NewFlagSet(cmd, flag.ExitOnError)
	dir := fs.String("dir", ".", "lists: output directory")
	deny := fs.Int("deny", 100000, "lists: deny prefixes")
	allow := fs.Int("allow", 1000, "lists: allow entries, 127.0.0.1 included")
	api := fs.String("api", "127.0.0.1:9181", "API address")
	dec := fs.String("decide", "127.0.0.1:9180", "decision listener address")
	n := fs.Int("n", 100000, "requests (bans, ingest) or trials (acklat)")
	c := fs.Int("c", 64, "concurrent connections")
	failures := fs.Int("failures", 5, "acklat: DOORMAN_MAX_FAILURES of the instance")
	seed := fs.Uint64("seed", 1, "address sequence; distinct seeds give disjoint addresses")
	dur := fs.Duration("d", 0, "bans, ingest: stop after this long even if fewer than n were sent (0: no limit)")
	fs.Parse(args)
	var err error
	switch cmd {
	case "lists":
		err = lists(*dir, *deny, *allow)
	case "bans":
		err = post(*api, "/v1/bans", *n, *c, *dur, *seed, func(ip string) string {
			return `{"ip":"` + ip + `","duration":"24h"}`
		}, fasthttp.StatusCreated)
	case "ingest":
		err = post(*api, "/v1/failures", *n, *c, *dur, *seed, func(ip string) string {
			return `{"ip":"` + ip + `","username":"bench"}`
		}, fasthttp.StatusOK)
	case "acklat":
		err = acklat(*api, *dec, *n, *failures, *seed)
	default:
		err = fmt.Errorf("unknown command %q", cmd)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
}

// addr returns the i-th address of a sequence: distinct for distinct i (an odd
// multiplier is a bijection mod 2^32), never in 0/8, 127/8 or 224/3, and the
// sequences of two seeds are disjoint for i < 2^24.
func addr(seed uint64, i int) netip.Addr {
	x := uint32(i)*2654435761 ^ 0x5bd1e995
	b := [4]byte{}
	binary.BigEndian.PutUint32(b[:], x)
	// First octet from the seed: 1..126 or 128..223, never the benchmark's sources.
	b[0] = byte(1 + (seed*37+uint64(i>>24))%222)
	if b[0] >= 127 {
		b[0]++
	}
	return netip.AddrFrom4(b)
}

// lists writes deny.txt (random prefixes /16–/32 that never cover 127/8) and
// allow.txt (random /32s and 127.0.0.1).
func lists(dir string, deny, allow int) error {
	r := rand.New(rand.NewPCG(42, 42))
	loop := netip.MustParsePrefix("127.0.0.0/8")
	var sb strings.Builder
	sb.WriteString("# random deny prefixes for the benchmark\n")
	seen := make(map[netip.Prefix]bool, deny)
	for k := 0; k < deny; {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], r.Uint32())
		if b[0] == 0 || b[0] >= 224 {
			continue
		}
		bits := 16 + r.IntN(17)
		if bits < 24 && r.IntN(4) != 0 {
			bits = 24 + r.IntN(9) // mostly long prefixes, as threat feeds are
		}
		p := netip.PrefixFrom(netip.AddrFrom4(b), bits).Masked()
		if p.Overlaps(loop) || seen[p] {
			continue
		}
		seen[p] = true
		fmt.Fprintln(&sb, p)
		k++
	}
	if err := os.WriteFile(filepath.Join(dir, "deny.txt"), []byte(sb.String()), 0o644); err != nil {
		return err
	}
	sb.Reset()
	sb.WriteString("# the benchmark's source and random addresses\n127.0.0.1\n")
	for k := 1; k < allow; k++ {
		fmt.Fprintln(&sb, addr(99, k))
	}
	return os.WriteFile(filepath.Join(dir, "allow.txt"), []byte(sb.String()), 0o644)
}

func client(addr string, conns int) *fasthttp.HostClient {
	hc := &fasthttp.HostClient{Addr: addr, MaxConns: conns, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second}
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		hc.Addr = "localhost"
		hc.Dial = func(string) (net.Conn, error) { return net.Dial("unix", path) }
	}
	return hc
}

// post sends n requests (or as many as fit in d) with c workers, each for a
// distinct address, and reports the rate. Any status but want is an error.
func post(api, path string, n, c int, d time.Duration, seed uint64, body func(ip string) string, want int) error {
	hc := client(api, c)
	var next, done, bad atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	var stop atomic.Bool
	if d > 0 {
		t := time.AfterFunc(d, func() { stop.Store(true) })
		defer t.Stop()
	}
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			for {
				i := int(next.Add(1) - 1)
				if i >= n || stop.Load() {
					return
				}
				req.Reset()
				req.SetRequestURI("http://" + hc.Addr + path)
				req.Header.SetMethod("POST")
				req.Header.SetContentType("application/json")
				req.SetBodyString(body(addr(seed, i).String()))
				err := hc.Do(req, resp)
				if err == nil && resp.StatusCode() != want {
					err = fmt.Errorf("%s: status %d: %s", path, resp.StatusCode(), resp.Body())
				}
				if err != nil {
					bad.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	fmt.Printf("path=%s n=%d conns=%d seconds=%.3f rate=%.0f errors=%d\n", path, done.Load(), c, el.Seconds(), float64(done.Load())/el.Seconds(), bad.Load())
	if e := firstErr.Load(); e != nil {
		return errors.New(e.(string))
	}
	return nil
}

// acklat bans n distinct addresses through the webhook, one after another. The
// moment the banning failure's answer arrives, it asks the decision listener
// (as nginx would, X-Real-IP over a kept-alive connection) about that address.
// Every such first decision must be 403; it reports how long after the ack that
// 403 arrived, and how long the banning webhook call took.
func acklat(api, dec string, n, failures int, seed uint64) error {
	hc, dc := client(api, 1), client(dec, 1)
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	dreq, dresp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	dreq.SetRequestURI("http://" + dc.Addr + "/decide")
	var after, call []time.Duration
	denied := 0
	for i := range n {
		ip := addr(seed, i).String()
		// The decision before any failure must be an allow, or the test proves nothing.
		dreq.Header.Set("X-Real-IP", ip)
		if err := dc.Do(dreq, dresp); err != nil || dresp.StatusCode() != fasthttp.StatusNoContent {
			return fmt.Errorf("%s: decision before the failures: %v status %d", ip, err, dresp.StatusCode())
		}
		for f := 1; f <= failures; f++ {
			req.Reset()
			req.SetRequestURI("http://" + hc.Addr + "/v1/failures")
			req.Header.SetMethod("POST")
			req.SetBodyString(`{"ip":"` + ip + `"}`)
			t0 := time.Now()
			if err := hc.Do(req, resp); err != nil || resp.StatusCode() != fasthttp.StatusOK {
				return fmt.Errorf("failure %d of %s: %v status %d", f, ip, err, resp.StatusCode())
			}
			ack := time.Now()
			var out struct{ Banned bool }
			if err := json.Unmarshal(resp.Body(), &out); err != nil {
				return err
			}
			if out.Banned != (f == failures) {
				return fmt.Errorf("failure %d of %s: banned=%v; is DOORMAN_MAX_FAILURES %d?", f, ip, out.Banned, failures)
			}
			if f < failures {
				continue
			}
			call = append(call, ack.Sub(t0))
			if err := dc.Do(dreq, dresp); err != nil {
				return err
			}
			after = append(after, time.Since(ack))
			if dresp.StatusCode() == fasthttp.StatusForbidden {
				denied++
			}
		}
	}
	slices.Sort(after)
	slices.Sort(call)
	pct := func(d []time.Duration, p float64) float64 { return float64(d[int(p*float64(len(d)-1))].Microseconds()) }
	fmt.Printf("trials=%d denied_first=%d late=%d ack_to_403_p50_us=%.0f ack_to_403_p99_us=%.0f webhook_p50_us=%.0f webhook_p99_us=%.0f\n",
		n, denied, n-denied, pct(after, .5), pct(after, .99), pct(call, .5), pct(call, .99))
	if denied != n {
		return fmt.Errorf("%d of %d first decisions after the ack were not 403", n-denied, n)
	}
	return nil
}
