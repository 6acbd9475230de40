package test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// slowLink is a TCP relay to target that holds every chunk it forwards, in
// either direction, for delay before passing it on, in order: a client
// behind it is as far from the server as one across a network with a round
// trip of 2 × delay. It connects to target from src, which the server sees
// as the client. (The kernel here has no netem.)
func slowLink(t *testing.T, target, src string, delay time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := dialer.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			go delayed(s, c, delay)
			go delayed(c, s, delay)
		}
	}()
	return ln.Addr().String()
}

// delayed copies from src to dst, each chunk delay after it was read.
func delayed(dst, src net.Conn, delay time.Duration) {
	type chunk struct {
		b   []byte
		due time.Time
	}
	q := make(chan chunk, 64)
	go func() {
		defer close(q)
		for {
			b := make([]byte, 32<<10)
			n, err := src.Read(b)
			if n > 0 {
				q <- chunk{b[:n], time.Now().Add(delay)}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range q {
		time.Sleep(time.Until(c.due)) // the link's latency, not a wait for an outcome
		if _, err := dst.Write(c.b); err != nil {
			break
		}
	}
	dst.Close()
	io.Copy(io.Discard, src)
}

// TestLearnFarClient: a client a 1 ms round trip away from nginx, as on a
// LAN, sends its next request as soon as it has read the failing answer.
// The record leaves nginx after the answer, so the ban races that request;
// across 1 ms it must win at least 90% of the time (docs/learn.md gives the
// figures; a client on nginx's own host can be faster).
func TestLearnFarClient(t *testing.T) {
	requireTool(t, "nginx", "nginx")
	lockFixedPorts(t)
	sock := filepath.Join(t.TempDir(), "learn.sock")
	d := learnDoorman(t, sock, "1", nil)
	n := learnNginx(t, sock, loginApp(t))
	const client = "127.0.3.5"
	link := slowLink(t, fmt.Sprintf("127.0.0.1:%d", n.Port), client, 500*time.Microsecond)
	samples := 50
	if os.Getenv("DOORMAN_LEARN_FIGURES") == "1" {
		samples = 500
	}
	refused := 0
	for i := range samples {
		c, err := net.Dial("tcp", link)
		if err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(c)
		body := "password=wrong"
		fmt.Fprintf(c, "POST /admin/login/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("sample %d: failing POST answered %d, want 200", i, resp.StatusCode)
		}
		fmt.Fprintf(c, "GET /admin/ HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err = http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		c.Close()
		if resp.StatusCode == http.StatusForbidden {
			refused++
		}
		if status, b := d.API(t, "DELETE", "/v1/bans/"+client, nil); status != http.StatusNoContent {
			t.Fatalf("unban %s: %d %s", client, status, b)
		}
	}
	t.Logf("client a 1ms round trip away: next request refused in %d of %d", refused, samples)
	if refused*10 < samples*9 {
		t.Errorf("next request refused in %d of %d, want at least 90%%", refused, samples)
	}
}

// TestLearnAfterDoormanRestart: nginx keeps sending records to a doorman
// that restarted (a new socket at the same path). Its socket to the old one
// fails once and is opened again for the next record, so at most the first
// record after the restart is lost; the records after it are booked and ban.
func TestLearnAfterDoormanRestart(t *testing.T) {
	requireTool(t, "nginx", "nginx")
	lockFixedPorts(t)
	sock := filepath.Join(t.TempDir(), "learn.sock")
	d := learnDoorman(t, sock, "3", nil)
	n := learnNginx(t, sock, loginApp(t))
	c := clientFrom("127.0.0.50")
	post := func() {
		t.Helper()
		resp, err := c.Post(n.URL("/admin/login/"), "application/x-www-form-urlencoded", strings.NewReader("password=wrong"))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("failing POST: %d, want 200", resp.StatusCode)
		}
	}
	post()
	waitBooked(t, d, 1, 0)
	d.Restart(t) // failure counts live in memory: the new doorman starts from 0
	deadline := time.Now().Add(10 * time.Second)
	sent := 0
	for learnMetric(t, d, "doorman_learn_failures_total") < 1 {
		if time.Now().After(deadline) {
			t.Fatalf("no record booked after the restart, %d sent", sent)
		}
		post()
		sent++
		// Booked within milliseconds, or lost: wait for it before the next.
		for wait := time.Now().Add(500 * time.Millisecond); time.Now().Before(wait) && learnMetric(t, d, "doorman_learn_failures_total") < 1; {
			time.Sleep(5 * time.Millisecond)
		}
	}
	t.Logf("first record booked after the restart: number %d", sent)
	if sent > 2 {
		t.Errorf("%d records sent before one was booked, want at most 2 (one lost)", sent)
	}
	post()
	post()
	waitBooked(t, d, 3, 0)
	resp, err := c.Get(n.URL("/admin/"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("after 3 failures learned by the restarted doorman: %d, want 403", resp.StatusCode)
	}
}
