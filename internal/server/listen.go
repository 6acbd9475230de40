package server

import (
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/doorman/doorman/internal/sockfile"
)

// Listen opens a TCP address (network "tcp") or a unix socket at path
// (network "unix"). A stale socket file is replaced; the socket gets mode
// perm, so nginx's user can reach the decision socket while the API socket
// stays private.
func Listen(network, path string, perm fs.FileMode) (net.Listener, error) {
	if network != "unix" {
		return net.Listen(network, path)
	}
	if err := sockfile.Clear("unix", path); err != nil {
		return nil, err
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, perm); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// IdleTimeout keeps idle keep-alive connections from nginx open longer than
// nginx's own upstream keepalive_timeout (60 s by default), so nginx, not
// doorman, closes them: a connection closed by doorman while nginx reuses it
// costs that request a retry.
const IdleTimeout = 75 * time.Second

// DecideLimits bound the decision listener's connections (Watch): a
// request must arrive within 10 s of its first byte and be answered within
// 10 s, as the API listener's; idle keep-alive connections last IdleTimeout.
var DecideLimits = Limits{Idle: IdleTimeout, Read: 10 * time.Second, Write: 10 * time.Second}

// NewDecideServer returns the decision listener's server. Limits are set for
// nginx as the only client: small headers, no body. Its answers carry no
// Server, Date or Content-Type header: the proxy reads the status and
// doorman's own headers, and a forward-auth proxy copies a denial's headers
// to the client. It sets no timeouts:
// serve it on a listener from Watch with DecideLimits, which bounds slow
// and idle clients at less cost per request. LazyRequestTime: no handler
// reads the request time, so none is taken.
func NewDecideServer(d *Decider, log *slog.Logger) *fasthttp.Server {
	return &fasthttp.Server{
		Handler:                      d.Handle,
		ErrorHandler:                 DecideError,
		NoDefaultServerHeader:        true, // and no Name: no Server header at all
		NoDefaultDate:                true,
		NoDefaultContentType:         true,
		DisablePreParseMultipartForm: true,
		ReadBufferSize:               8 << 10, // max request head; larger is a 403
		WriteBufferSize:              4 << 10,
		MaxRequestBodySize:           4 << 10,
		LazyRequestTime:              true,
		Concurrency:                  64 << 10,
		Logger:                       slogPrinter{log},
		SecureErrorLogMessage:        true,
	}
}

// NewAPIServer returns the API listener's server.
func NewAPIServer(a *API, log *slog.Logger) *fasthttp.Server {
	return &fasthttp.Server{
		Handler:                      a.Handle,
		ErrorHandler:                 APIError,
		Name:                         "doorman",
		NoDefaultServerHeader:        true,
		DisablePreParseMultipartForm: true,
		ReadBufferSize:               8 << 10,
		MaxRequestBodySize:           MaxBody,
		ReadTimeout:                  10 * time.Second,
		WriteTimeout:                 30 * time.Second, // GET /v1/bans can be large
		IdleTimeout:                  IdleTimeout,
		Concurrency:                  16 << 10,
		Logger:                       slogPrinter{log},
		SecureErrorLogMessage:        true,
	}
}

type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Printf(format string, args ...any) {
	p.log.Debug("http", "msg", fmt.Sprintf(format, args...))
}
