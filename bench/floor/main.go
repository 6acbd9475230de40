// Command floor is the Go floor of the benchmark: a fasthttp server with
// default settings that answers every request with an empty 204 and does
// nothing else. doorman's decision listener is measured against it.
//
// Usage: floor ADDR   (host:port or unix:/path.sock)
package main

import (
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/valyala/fasthttp"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: floor host:port|unix:/path.sock")
		os.Exit(2)
	}
	network, addr := "tcp", os.Args[1]
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
	if err := s.Serve(ln); err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
}
