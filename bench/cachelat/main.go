// Command cachelat measures what nginx's cached mode adds to a ban's webhook
// call: the refresh of the banned address in nginx before the call answers.
// It alternates two kinds of trial on one doorman in cached mode:
//
//   - kept: the address is first allowed through nginx (the verdict is kept
//     in nginx's cache and remembered by doorman), so its ban is refreshed;
//   - not kept: the address never went through nginx: nothing to refresh.
//
// In each trial, failures are posted for the address until the webhook says
// banned; the banning call is timed, over a kept-alive API connection. Then
// the address asks nginx again: a 200 there is a late verdict.
//
//	cachelat -api 127.0.0.1:9181 -url http://127.0.0.1:8080/cached/index.html -net 127.30 -n 500
//
// Addresses are NET.x.y (up to 31,250 trials of each kind); DOORMAN_ALLOW
// must admit NET.0.0/16, and range bans must be off
// (DOORMAN_RANGE_THRESHOLD=0) so that each ban is the address's own.
// Loopback only; results are one line of key=value pairs.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"
)

func main() {
	api := flag.String("api", "127.0.0.1:9181", "doorman's API")
	url := flag.String("url", "", "a location of nginx protected by the cached snippet")
	prefix := flag.String("net", "127.30", "first two octets of the trial addresses")
	n := flag.Int("n", 500, "trials of each kind")
	flag.Parse()
	if err := run(*api, *url, *prefix, *n); err != nil {
		fmt.Fprintln(os.Stderr, "cachelat:", err)
		os.Exit(1)
	}
}

func run(api, url, prefix string, n int) error {
	var a, b int
	if _, err := fmt.Sscanf(prefix, "%d.%d", &a, &b); err != nil {
		return fmt.Errorf("-net %q: want two octets, e.g. 127.30", prefix)
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 1}}
	var kept, notKept []time.Duration
	late := 0
	for i := range 2 * n {
		ip := fmt.Sprintf("%d.%d.%d.%d", a, b, i/250, i%250+1)
		keep := i%2 == 0
		if keep {
			if s, err := from(ip, url); err != nil || s != http.StatusOK {
				return fmt.Errorf("%s before its ban: %d %v, want 200", ip, s, err)
			}
		}
		d, err := ban(hc, api, ip)
		if err != nil {
			return err
		}
		if keep {
			kept = append(kept, d)
		} else {
			notKept = append(notKept, d)
		}
		if s, err := from(ip, url); err != nil {
			return err
		} else if s != http.StatusForbidden {
			late++
		}
	}
	slices.Sort(kept)
	slices.Sort(notKept)
	pct := func(d []time.Duration, p float64) float64 { return float64(d[int(p*float64(len(d)-1))].Microseconds()) }
	fmt.Printf("trials=%d late=%d kept_p50_us=%.0f kept_p99_us=%.0f not_kept_p50_us=%.0f not_kept_p99_us=%.0f\n",
		n, late, pct(kept, .5), pct(kept, .99), pct(notKept, .5), pct(notKept, .99))
	if late > 0 {
		return fmt.Errorf("%d late verdicts", late)
	}
	return nil
}

// ban posts failures for ip until one bans it, and returns how long that
// call took.
func ban(hc *http.Client, api, ip string) (time.Duration, error) {
	for range 1000 {
		t0 := time.Now()
		resp, err := hc.Post("http://"+api+"/v1/failures", "application/json", strings.NewReader(`{"ip":"`+ip+`"}`))
		if err != nil {
			return 0, err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		d := time.Since(t0)
		if resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("failure of %s: %d %s", ip, resp.StatusCode, body)
		}
		if bytes.Contains(body, []byte(`"banned":true`)) {
			if bytes.Contains(body, []byte(`"proxies_refreshed":false`)) {
				return 0, fmt.Errorf("ban of %s: %s", ip, body)
			}
			return d, nil
		}
	}
	return 0, fmt.Errorf("%s: no ban after 1000 failures", ip)
}

// from sends GET url from the source address ip, on a new connection.
func from(ip, url string) (int, error) {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		}}}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}
