// Command floor is the Go floor of the benchmark: a fasthttp server that
// answers every request with an empty 204 and does nothing else. doorman's
// decision listener is measured against it.
//
// By default it keeps fasthttp's defaults, so each answer also carries the
// Server, Date and Content-Type headers. With -lean it is the leanest floor:
// NoDefaultServerHeader, NoDefaultDate and NoDefaultContentType, so the answer
// is the status line alone, fewer bytes than doorman writes.
//
// Usage: floor [-lean] ADDR   (host:port or unix:/path.sock)
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/valyala/fasthttp"
)

func main() {
	lean := flag.Bool("lean", false, "no Server, Date or Content-Type header")
	flag.Usage = func() { fmt.Fprintln(os.Stderr, "usage: floor [-lean] host:port|unix:/path.sock") }
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	network, addr := "tcp", flag.Arg(0)
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		network, addr = "unix", path
		os.Remove(path)
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
	if network == "unix" {
		os.Chmod(addr, 0o666)
	}
	s := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.SetStatusCode(fasthttp.StatusNoContent)
	}}
	if *lean {
		s.NoDefaultServerHeader, s.NoDefaultDate, s.NoDefaultContentType = true, true, true
	}
	if err := s.Serve(ln); err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
}
