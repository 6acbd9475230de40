package server

import (
	"bufio"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

var testLimits = Limits{Idle: 1500 * time.Millisecond, Read: 500 * time.Millisecond, Write: 500 * time.Millisecond}

// watchedServer serves 204s on a watched loopback listener.
func watchedServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.SetStatusCode(204) },
		NoDefaultDate: true, MaxIdleWorkerDuration: 50 * time.Millisecond}
	go s.Serve(Watch(ln, testLimits))
	t.Cleanup(func() { s.Shutdown() })
	return ln.Addr().String()
}

// closedWithin reads from c until the server closes it and returns when.
func closedWithin(t *testing.T, c net.Conn, start time.Time, most time.Duration) time.Duration {
	t.Helper()
	c.SetReadDeadline(start.Add(most))
	_, err := io.Copy(io.Discard, c)
	if err != nil {
		t.Fatalf("not closed by the server within %v: %v", most, err)
	}
	return time.Since(start)
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

const req = "GET /decide HTTP/1.1\r\nHost: d\r\n\r\n"

func TestWatchSilentClient(t *testing.T) {
	addr := watchedServer(t)
	start := time.Now()
	took := closedWithin(t, dial(t, addr), start, testLimits.Read+4*WatchTick)
	if took < testLimits.Read {
		t.Errorf("closed after %v, before the read limit %v", took, testLimits.Read)
	}
}

// A head trickled a byte at a time is bounded from its first byte, however
// steadily the bytes come.
func TestWatchTrickledHead(t *testing.T) {
	addr := watchedServer(t)
	c := dial(t, addr)
	start := time.Now()
	go func() {
		for i := 0; i < 100; i++ {
			if _, err := c.Write([]byte("G")); err != nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	took := closedWithin(t, c, start, testLimits.Read+4*WatchTick)
	if took < testLimits.Read {
		t.Errorf("closed after %v, before the read limit %v", took, testLimits.Read)
	}
}

// A keep-alive connection answering promptly lives past the read limit; idle,
// it is closed after the idle limit, not the read limit.
func TestWatchKeepAlive(t *testing.T) {
	addr := watchedServer(t)
	c := dial(t, addr)
	br := bufio.NewReader(c)
	ask := func() {
		t.Helper()
		if _, err := io.WriteString(c, req); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, err := br.ReadString('\n')
		if err != nil || !strings.Contains(line, " 204 ") {
			t.Fatalf("answer %q, %v", line, err)
		}
		for line != "\r\n" {
			if line, err = br.ReadString('\n'); err != nil {
				t.Fatal(err)
			}
		}
	}
	end := time.Now().Add(2 * testLimits.Read)
	for time.Now().Before(end) {
		ask()
		time.Sleep(100 * time.Millisecond)
	}
	ask()
	start := time.Now()
	c.SetReadDeadline(start.Add(testLimits.Idle + 4*WatchTick))
	if _, err := io.Copy(io.Discard, br); err != nil {
		t.Fatalf("idle connection not closed within %v: %v", testLimits.Idle+4*WatchTick, err)
	}
	if took := time.Since(start); took < testLimits.Idle-WatchTick {
		t.Errorf("idle connection closed after %v, before the idle limit %v", took, testLimits.Idle)
	}
}

// pipeListener hands out one end of a net.Pipe, whose writes block until
// the other end reads.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
}

func (p *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-p.conns:
		return c, nil
	case <-p.done:
		return nil, net.ErrClosed
	}
}
func (p *pipeListener) Close() error   { close(p.done); return nil }
func (p *pipeListener) Addr() net.Addr { return &net.UnixAddr{Name: "pipe"} }

// A client that reads no answer holds the connection for the write limit.
func TestWatchUnreadAnswer(t *testing.T) {
	pl := &pipeListener{conns: make(chan net.Conn, 1), done: make(chan struct{})}
	ln := Watch(pl, testLimits)
	defer ln.Close()
	server, client := net.Pipe()
	defer client.Close()
	pl.conns <- server
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = c.Write([]byte("HTTP/1.1 204 No Content\r\n\r\n")) // blocks: the client never reads
	took := time.Since(start)
	if err == nil {
		t.Fatal("write to a client that never reads succeeded")
	}
	if took < testLimits.Write || took > testLimits.Write+4*WatchTick {
		t.Errorf("write ended after %v, want the write limit %v", took, testLimits.Write)
	}
}
