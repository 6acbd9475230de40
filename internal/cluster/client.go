package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
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
// max_retries, …). It does not dial.
func NewClient(rawURL string) (redis.UniversalClient, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
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

// Redact drops the password from a Redis URL, for logs.
func Redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "(unparseable)"
	}
	return u.Redacted()
}

// redisLogger sends go-redis's own messages (reconnect attempts, mostly) to
// the debug level: the outage and the recovery are logged once by Cluster.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, "redis: "+fmt.Sprintf(format, v...))
}
