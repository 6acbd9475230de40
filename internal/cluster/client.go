package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Timeouts for one Redis round trip. They are short on purpose: while Redis is
// slow or gone, the webhook falls back to local counting instead of waiting.
const (
	dialTimeout = time.Second
	ioTimeout   = time.Second
)

// NewClient connects to the Redis named by rawURL (DOORMAN_REDIS_URL):
//
//	redis://[user:password@]host:port/db       one server (rediss:// for TLS, unix:///path.sock)
//	redis://host:port?master_name=M&addr=h2:p2  Sentinel: the sentinels' addresses, the master's name
//	redis://host:port?addr=h2:p2&addr=h3:p3     Redis Cluster: seed nodes (cluster=true with one seed)
//
// The other query parameters are go-redis options (dial_timeout, read_timeout,
// max_retries, …). It does not dial. Its errors never hold a secret of the
// URL (see Redact).
func NewClient(rawURL string) (redis.UniversalClient, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, parseError(err)
	}
	if err := misplaced(u); err != nil {
		return nil, err
	}
	c, err := newClient(u)
	if err != nil {
		return nil, scrub(err, secrets(u))
	}
	return c, nil
}

// CheckURL parses rawURL as NewClient does, without dialing, so that a bad
// DOORMAN_REDIS_URL stops every command before any file is touched. Its error
// holds no secret of the URL.
func CheckURL(rawURL string) error {
	c, err := NewClient(rawURL)
	if err != nil {
		return err
	}
	return c.Close()
}

func newClient(u *url.URL) (redis.UniversalClient, error) {
	q := u.Query()
	cluster := q.Get("cluster") == "true" || q.Get("cluster") == "1"
	q.Del("cluster")
	u.RawQuery = q.Encode()
	switch {
	case q.Has("master_name"):
		o, err := redis.ParseFailoverURL(u.String())
		if err != nil {
			return nil, err
		}
		tune(&o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout, &o.MaxRetries, &o.ContextTimeoutEnabled)
		return redis.NewFailoverClient(o), nil
	case cluster || q.Has("addr"):
		o, err := redis.ParseClusterURL(u.String())
		if err != nil {
			return nil, err
		}
		tune(&o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout, &o.MaxRetries, &o.ContextTimeoutEnabled)
		return redis.NewClusterClient(o), nil
	}
	o, err := redis.ParseURL(u.String())
	if err != nil {
		return nil, err
	}
	tune(&o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout, &o.MaxRetries, &o.ContextTimeoutEnabled)
	return redis.NewClient(o), nil
}

// tune applies doorman's defaults to the fields every go-redis option type
// has: short timeouts unless the URL sets them, and go-redis's default of 3
// retries turned off (a script that timed out may have run, and running it
// again would count one failure twice); an explicit max_retries is kept.
func tune(dial, read, write *time.Duration, maxRetries *int, ctxTimeout *bool) {
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{{dial, dialTimeout}, {read, ioTimeout}, {write, ioTimeout}} {
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if *maxRetries == 0 {
		*maxRetries = -1
	}
	*ctxTimeout = true
}

// A Redis URL's secrets are the password of its userinfo and the value of
// every query parameter whose name holds one of secretWords: go-redis reads
// a Sentinel master's password from password= (the userinfo is the
// sentinels'), and other names (sentinel_password=) are common guesses that
// go-redis refuses, after which the URL is still shown in the error.
var secretWords = []string{"pass", "secret", "token", "auth"}

// hidden replaces a secret.
const hidden = "xxxxx"

func secretParam(name string) bool {
	name = strings.ToLower(name)
	for _, w := range secretWords {
		if strings.Contains(name, w) {
			return true
		}
	}
	return false
}

// Redact returns rawURL for log lines and errors, with every secret (see
// secretWords) replaced by xxxxx. A URL that does not parse, or that
// misplaced refuses, is not shown at all: a password's characters may stand
// anywhere in it.
func Redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "(not shown: not a valid URL)"
	}
	if misplaced(u) != nil {
		return "(not shown: '@' or '#' after the host)"
	}
	pairs := strings.Split(u.RawQuery, "&")
	for i, pair := range pairs {
		k, _, _ := strings.Cut(pair, "=")
		if name, err := url.QueryUnescape(k); err != nil || secretParam(name) {
			pairs[i] = k + "=" + hidden
		}
	}
	if u.RawQuery != "" {
		u.RawQuery = strings.Join(pairs, "&")
	}
	return u.Redacted()
}

// errMisplaced is misplaced's answer.
var errMisplaced = errors.New("'@' or '#' after the host: percent-encode '@', '/', '?', '#' and '%' in the password (%40, %2F, %3F, %23, %25)")

// misplaced refuses a URL whose userinfo was probably cut short: a password
// holding an unescaped '/', '?' or '#' ends the host there, and its tail
// becomes the path, a query parameter or the fragment, to be echoed by
// go-redis's errors and by Redact. So '@' may only stand in the userinfo
// and in the value of a secret parameter; a fragment (which go-redis
// ignores) and an opaque URL (redis:user:pass@host) are refused too.
func misplaced(u *url.URL) error {
	if u.Opaque != "" || u.Fragment != "" || strings.Contains(u.EscapedPath(), "@") {
		return errMisplaced
	}
	for _, pair := range strings.Split(u.RawQuery, "&") {
		k, v, _ := strings.Cut(pair, "=")
		name, err := url.QueryUnescape(k)
		if strings.Contains(k, "@") || strings.Contains(v, "@") && (err != nil || !secretParam(name)) {
			return errMisplaced
		}
	}
	return nil
}

// secrets returns the secret values of u (see secretWords), decoded and as
// they may be quoted or escaped in an error.
func secrets(u *url.URL) []string {
	var raw []string
	if p, ok := u.User.Password(); ok {
		raw = append(raw, p)
	}
	for k, vs := range u.Query() {
		if secretParam(k) {
			raw = append(raw, vs...)
		}
	}
	var out []string
	for _, s := range raw {
		if s == "" {
			continue
		}
		q := strconv.Quote(s)
		out = append(out, s, url.QueryEscape(s), url.PathEscape(s), q[1:len(q)-1])
	}
	return out
}

// scrub returns err's message with every secret replaced by xxxxx.
func scrub(err error, secrets []string) error {
	msg := err.Error()
	for _, s := range secrets {
		msg = strings.ReplaceAll(msg, s, hidden)
	}
	return errors.New(msg)
}

// quoted matches a Go-quoted string in an error message.
var quoted = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)

// parseError reports a URL that does not parse. url.Parse's error repeats the
// whole URL and quotes the offending part, which may be a piece of the
// password (`invalid port ":pa" after host`): neither is shown.
func parseError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	msg := quoted.ReplaceAllString(err.Error(), `"…"`)
	if msg != err.Error() {
		msg += " (the quoted part is not shown; percent-encode '@', '/', '?', '#' and '%' in the password)"
	}
	return fmt.Errorf("not a valid URL: %s", msg)
}

// redisLogger sends go-redis's own messages (reconnect attempts, mostly) to
// the debug level: the outage and the recovery are logged once by Cluster.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, "redis: "+fmt.Sprintf(format, v...))
}
