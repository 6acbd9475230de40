// Package config reads doorman's configuration from environment variables into
// one struct, validates it once, and prints the reference that `doorman env`
// shows. Every error names the variable and quotes the bad value.
package config

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"reflect"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/caarlos0/env/v11"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/accesslog"
)

// Config is every setting. The env tag names the variable, envDefault its
// default, and help its one-line meaning for `doorman env` and docs/config.md.
type Config struct {
	DecideAddr     string `env:"DOORMAN_DECIDE_ADDR" group:"listeners" envDefault:"127.0.0.1:9180" help:"decision listener (nginx auth_request): host:port or unix:/path.sock"`
	APIAddr        string `env:"DOORMAN_API_ADDR" group:"listeners" envDefault:"127.0.0.1:9181" help:"API listener (webhook, bans, /healthz, /metrics): host:port or unix:/path.sock; the CLI's target"`
	APIToken       string `env:"DOORMAN_API_TOKEN" group:"listeners" help:"bearer token required on /v1/ when set; required when the API address is not loopback or a unix socket"`
	ClientIPHeader string `env:"DOORMAN_CLIENT_IP_HEADER" group:"listeners" envDefault:"X-Real-IP" help:"header carrying the client address, read only from trusted proxies"`
	TrustedProxies string `env:"DOORMAN_TRUSTED_PROXIES" group:"listeners" envDefault:"127.0.0.0/8,::1/128" help:"peers whose client-IP header is believed (IPs/CIDRs): DOORMAN_CLIENT_IP_HEADER on /decide, X-Forwarded-For hops on /forward-auth and /ext-authz/; unix-socket peers are always trusted"`
	ExposeReason   bool   `env:"DOORMAN_EXPOSE_REASON" group:"listeners" envDefault:"false" help:"also send X-Doorman-Verdict and X-Doorman-Reason on /forward-auth and /ext-authz/ (Traefik, Caddy and Envoy pass a denial's headers on to the client)"`

	Allow     string `env:"DOORMAN_ALLOW" group:"lists" help:"if set, only these IPs/CIDRs are allowed (comma-separated)"`
	Deny      string `env:"DOORMAN_DENY" group:"lists" help:"IPs/CIDRs always denied (comma-separated)"`
	NeverBan  string `env:"DOORMAN_NEVER_BAN" group:"lists" help:"IPs/CIDRs whose failures are counted but never banned"`
	AllowFile string `env:"DOORMAN_ALLOW_FILE" group:"lists" help:"file of allow entries, one per line, # comments; merged with DOORMAN_ALLOW; re-read on SIGHUP"`
	DenyFile  string `env:"DOORMAN_DENY_FILE" group:"lists" help:"file of deny entries, as DOORMAN_ALLOW_FILE; merged with DOORMAN_DENY; re-read on SIGHUP"`

	DenyFeeds       string        `env:"DOORMAN_DENY_FEEDS" group:"feeds" help:"deny feeds, NAME=URL comma-separated (https://, http:// or file://), e.g. spamhaus=https://www.spamhaus.org/drop/drop.txt; one IP or CIDR per line, # and ; comments; see docs/feeds.md"`
	FeedRefresh     time.Duration `env:"DOORMAN_FEED_REFRESH" group:"feeds" envDefault:"1h" help:"how often each feed is fetched again (conditional requests), from 1s to 24h; public feeds ask for an hour or more"`
	FeedMaxPrefixes int           `env:"DOORMAN_FEED_MAX_PREFIXES" group:"feeds" envDefault:"1000000" help:"prefixes held at most over all feeds, in the order of DOORMAN_DENY_FEEDS; a feed beyond is cut and reported"`
	FeedTokens      string        `env:"DOORMAN_FEED_TOKENS" group:"feeds" help:"NAME=TOKEN comma-separated: sent as Authorization: Bearer TOKEN when fetching that feed (another doorman's /v1/feed)"`
	GeoIPDB         string        `env:"DOORMAN_GEOIP_DB" group:"feeds" help:"country database (.mmdb: MaxMind GeoLite2/GeoIP2 Country, DB-IP, IPinfo); re-read on SIGHUP, a bad file keeps the one in use"`
	ASNDB           string        `env:"DOORMAN_ASN_DB" group:"feeds" help:"autonomous system database (.mmdb: GeoLite2 ASN, DB-IP, IPinfo); re-read on SIGHUP; also shown by doorman check"`
	AllowCountries  string        `env:"DOORMAN_ALLOW_COUNTRIES" group:"feeds" help:"ISO country codes, comma-separated: only these countries (and DOORMAN_ALLOW) may reach the protected location (reason country); needs DOORMAN_GEOIP_DB"`
	DenyCountries   string        `env:"DOORMAN_DENY_COUNTRIES" group:"feeds" help:"ISO country codes denied (reason country); needs DOORMAN_GEOIP_DB"`
	DenyASNs        string        `env:"DOORMAN_DENY_ASNS" group:"feeds" help:"autonomous systems denied, e.g. AS64500,AS64501 (reason asn); needs DOORMAN_ASN_DB"`

	MaxFailures     int           `env:"DOORMAN_MAX_FAILURES" group:"bans" envDefault:"5" help:"failures within DOORMAN_FIND_TIME that ban the ban unit"`
	FindTime        time.Duration `env:"DOORMAN_FIND_TIME" group:"bans" envDefault:"10m" help:"sliding window in which failures are counted"`
	BanTime         time.Duration `env:"DOORMAN_BAN_TIME" group:"bans" envDefault:"1h" help:"length of a unit's first ban"`
	BanFactor       float64       `env:"DOORMAN_BAN_FACTOR" group:"bans" envDefault:"2" help:"the n-th ban lasts BAN_TIME × FACTOR^(n-1)"`
	MaxBanTime      time.Duration `env:"DOORMAN_MAX_BAN_TIME" group:"bans" envDefault:"168h" help:"cap on a ban's length; a unit's ban count is forgotten this long after its last ban ends"`
	IPv4Prefix      int           `env:"DOORMAN_IPV4_PREFIX" group:"bans" envDefault:"32" help:"prefix length of an IPv4 ban unit"`
	IPv6Prefix      int           `env:"DOORMAN_IPV6_PREFIX" group:"bans" envDefault:"64" help:"prefix length of an IPv6 ban unit"`
	RangeThreshold  int           `env:"DOORMAN_RANGE_THRESHOLD" group:"ranges" envDefault:"4" help:"unit bans in force at once inside one range that ban the range itself (reason range); 0 turns range bans off"`
	IPv4RangePrefix int           `env:"DOORMAN_IPV4_RANGE_PREFIX" group:"ranges" envDefault:"24" help:"prefix length of the IPv4 range that unit bans escalate to"`
	IPv6RangePrefix int           `env:"DOORMAN_IPV6_RANGE_PREFIX" group:"ranges" envDefault:"48" help:"prefix length of the IPv6 range that unit bans escalate to"`
	BanJitter       float64       `env:"DOORMAN_BAN_JITTER" group:"bans" envDefault:"0" help:"adds up to this fraction of random length to each automatic ban (0.1: up to 10%), so ban ends cannot be predicted"`
	NAT64Prefixes   string        `env:"DOORMAN_NAT64_PREFIXES" group:"listeners" envDefault:"64:ff9b::/96" help:"NAT64 /96 prefixes (RFC 6052): an address inside is judged and banned as the IPv4 address it embeds; empty turns it off"`
	MaxBans         int           `env:"DOORMAN_MAX_BANS" group:"bans" envDefault:"1000000" help:"ban records held at most; when full, expired records go first, then the automatic ban ending soonest; active manual bans are never evicted"`
	MaxTracked      int           `env:"DOORMAN_MAX_TRACKED" group:"bans" envDefault:"1000000" help:"addresses whose failures are tracked at most; the least recently failing is evicted first"`
	DryRun          bool          `env:"DOORMAN_DRY_RUN" group:"bans" envDefault:"false" help:"answer 204 always; the would-be verdict goes to metrics, logs and X-Doorman-Reason as dry-run-…"`

	AccountMaxFailures int           `env:"DOORMAN_ACCOUNT_MAX_FAILURES" group:"accounts" envDefault:"10" help:"failures of one account (the username, normalised) from any addresses within DOORMAN_ACCOUNT_FIND_TIME that lock it; 0 turns accounts off"`
	AccountFindTime    time.Duration `env:"DOORMAN_ACCOUNT_FIND_TIME" group:"accounts" envDefault:"1h" help:"sliding window in which an account's failures are counted"`
	AccountLockTime    time.Duration `env:"DOORMAN_ACCOUNT_LOCK_TIME" group:"accounts" envDefault:"15m" help:"length of an account's first lock, growing by DOORMAN_BAN_FACTOR up to DOORMAN_MAX_BAN_TIME; while locked, /v1/attempts refuses the account to clients without a valid device token"`
	MaxAccounts        int           `env:"DOORMAN_MAX_ACCOUNTS" group:"accounts" envDefault:"100000" help:"accounts tracked at most (and as many device tokens); the least recently failing is evicted first, a locked one last"`
	DeviceKey          string        `env:"DOORMAN_DEVICE_KEY" group:"accounts" help:"HMAC-SHA256 key of the device tokens, at least 32 bytes; unset: generated once and kept in the state file"`
	DeviceTTL          time.Duration `env:"DOORMAN_DEVICE_TTL" group:"accounts" envDefault:"720h" help:"life of the device token issued at each successful login"`
	DeviceMaxFailures  int           `env:"DOORMAN_DEVICE_MAX_FAILURES" group:"accounts" envDefault:"5" help:"failures with one valid device token after which it exempts nothing until DOORMAN_ACCOUNT_LOCK_TIME has passed"`

	GateAddr        string        `env:"DOORMAN_GATE_ADDR" group:"gate" envDefault:"127.0.0.1:9182" help:"gate listener (the sign-in and enrollment pages the proxy publishes under /_doorman/): host:port or unix:/path.sock; empty turns the gate off (docs/gate.md)"`
	GateOrigins     string        `env:"DOORMAN_GATE_ORIGINS" group:"gate" help:"origins of the gated sites, comma-separated (https://admin.example.com; http://localhost:PORT for tests); the passkeys' relying party is the first one's host; unset: the gate is off and /gate answers 401"`
	GateSessionTTL  time.Duration `env:"DOORMAN_GATE_SESSION_TTL" group:"gate" envDefault:"12h" help:"life of a gate session (the doorman_gate cookie)"`
	GateEnrollTTL   time.Duration `env:"DOORMAN_GATE_ENROLL_TTL" group:"gate" envDefault:"15m" help:"life of an enrollment link; each is used once"`
	GateTOTP        bool          `env:"DOORMAN_GATE_TOTP" group:"gate" envDefault:"true" help:"offer a TOTP secret at enrollment and a TOTP form at sign-in, beside the passkey"`
	GateBypassAllow bool          `env:"DOORMAN_GATE_BYPASS_ALLOW" group:"gate" envDefault:"false" help:"a valid gate session also passes DOORMAN_ALLOW (never DOORMAN_DENY): a registered device gets in from any address"`
	GateKey         string        `env:"DOORMAN_GATE_KEY" group:"gate" help:"HMAC-SHA256 key of the gate sessions, at least 32 bytes; unset: generated once and kept in the state file"`

	StateFile   string `env:"DOORMAN_STATE_FILE" group:"state" envDefault:"doorman.db" help:"embedded store for bans; empty keeps state in memory only"`
	StateReset  bool   `env:"DOORMAN_STATE_RESET" group:"state" envDefault:"false" help:"when the state file is unreadable, move it aside to FILE.corrupt-TIME and start empty instead of refusing to start"`
	RedisURL    string `env:"DOORMAN_REDIS_URL" group:"cluster" help:"cluster mode: share failures and bans through this Redis (redis:// or rediss://); see docs/cluster.md"`
	RedisPrefix string `env:"DOORMAN_REDIS_PREFIX" group:"cluster" envDefault:"doorman:" help:"cluster mode: prefix of every Redis key and of the pub/sub channel; doormen that share bans share it"`

	NotifyURL    string `env:"DOORMAN_NOTIFY_URL" group:"notify" help:"POST each ban, unban, range ban and account lock here (http:// or https://), batched at most once a second and retried; unset: no notifications"`
	NotifyFormat string `env:"DOORMAN_NOTIFY_FORMAT" group:"notify" envDefault:"json" help:"json ({\"events\":[…]}) or slack ({\"text\":…}, for Slack, Mattermost and Rocket.Chat incoming webhooks)"`
	NotifyProxy  string `env:"DOORMAN_NOTIFY_PROXY" group:"notify" help:"send the notifications through this HTTP proxy (http:// or https://, e.g. http://proxy:3128); unset: directly, whatever HTTP_PROXY and HTTPS_PROXY say; redirects are never followed"`
	MaxEvents    int    `env:"DOORMAN_MAX_EVENTS" group:"state" envDefault:"10000" help:"bans, unbans, range bans and locks kept in the state file for GET /v1/events and doorman events; the oldest is dropped first; 0 keeps none"`

	NginxRefreshURLs string        `env:"DOORMAN_NGINX_REFRESH_URLS" group:"cached mode" help:"cached mode (docs/nginx.md): the refresh URL of each nginx in front of this doorman, comma-separated, e.g. http://127.0.0.1/_doorman_refresh; set, /decide lets nginx keep verdicts and doorman replaces them when they change"`
	CacheTTL         time.Duration `env:"DOORMAN_CACHE_TTL" group:"cached mode" envDefault:"10s" help:"cached mode: the longest nginx keeps a verdict, from 1s to 1h; also how late a change can be where a refresh fails"`
	CacheTracked     int           `env:"DOORMAN_CACHE_TRACKED" group:"cached mode" envDefault:"1000000" help:"cached mode: verdicts kept by nginx that doorman remembers at most; beyond, new verdicts are answered as not to be kept"`

	LearnAddr       string        `env:"DOORMAN_LEARN_ADDR" group:"learn" help:"learn failures from the proxy's access log (docs/learn.md): unixgram:/run/doorman/learn.sock or udp:127.0.0.1:PORT (loopback only), receiving syslog datagrams or bare lines; unset: off"`
	LearnRules      string        `env:"DOORMAN_LEARN_RULES" group:"learn" help:"the login forms learned from: PRESET [HOST]PATH pairs separated by ;, e.g. django /admin/login/; wordpress /wp-login.php; status /login (POST answered 401 or 403 fails, 2xx or 3xx succeeds)"`
	NFTTable        string        `env:"DOORMAN_NFT_TABLE" group:"kernel" help:"kernel bans (docs/kernel.md): the nftables inet table doorman owns and fills with its bans, e.g. doorman; needs CAP_NET_ADMIN; empty turns kernel bans off"`
	NFTHooks        string        `env:"DOORMAN_NFT_HOOKS" group:"kernel" envDefault:"input" help:"hooks of the table's chains: input, or input,forward for services in containers"`
	NFTPorts        string        `env:"DOORMAN_NFT_PORTS" group:"kernel" envDefault:"80,443" help:"ports (TCP and UDP) closed to banned addresses, comma-separated; all for every port"`
	NFTMinCount     int           `env:"DOORMAN_NFT_MIN_COUNT" group:"kernel" envDefault:"1" help:"only bans whose escalation count reaches this go to the kernel (2: a first offender still sees the 403 page); manual bans always do"`
	NFTCheck        time.Duration `env:"DOORMAN_NFT_CHECK" group:"kernel" envDefault:"30s" help:"how often the kernel's sets are compared with doorman's bans and repaired (doorman_nft_drift_total)"`
	NFTRemoveOnStop bool          `env:"DOORMAN_NFT_REMOVE_ON_STOP" group:"kernel" envDefault:"false" help:"delete the table when doorman stops; false leaves it, so bans hold while doorman restarts"`

	LogFormat string `env:"DOORMAN_LOG_FORMAT" group:"logs" envDefault:"text" help:"text or json"`
	LogLevel  string `env:"DOORMAN_LOG_LEVEL" group:"logs" envDefault:"info" help:"debug, info, warn or error"`

	// Parsed by Validate.
	DecideListen   Listen         `env:"-"`
	APIListen      Listen         `env:"-"`
	Trusted        []netip.Prefix `env:"-"`
	AllowList      []netip.Prefix `env:"-"`
	DenyList       []netip.Prefix `env:"-"`
	NeverBanList   []netip.Prefix `env:"-"`
	NAT64List      []netip.Prefix `env:"-"`
	RefreshURLs    []string       `env:"-"` // DOORMAN_NGINX_REFRESH_URLS, split
	Feeds          []Feed         `env:"-"` // DOORMAN_DENY_FEEDS with DOORMAN_FEED_TOKENS
	AllowCC        []string       `env:"-"` // DOORMAN_ALLOW_COUNTRIES, upper case
	DenyCC         []string       `env:"-"`
	DenyASNList    []uint32       `env:"-"`
	GateListen     Listen         `env:"-"` // DOORMAN_GATE_ADDR; zero: no gate listener
	GateOriginList []*url.URL     `env:"-"` // DOORMAN_GATE_ORIGINS, parsed

	NotifyProxyURL *url.URL `env:"-"` // DOORMAN_NOTIFY_PROXY, parsed; nil: none

	LearnListen  LearnListen      `env:"-"` // DOORMAN_LEARN_ADDR, parsed; Network "": off
	LearnRuleSet *accesslog.Rules `env:"-"` // DOORMAN_LEARN_RULES, parsed; nil: off
	NFTHookList  []string         `env:"-"` // DOORMAN_NFT_HOOKS, split
	NFTPortList  []uint16         `env:"-"` // DOORMAN_NFT_PORTS, parsed; empty: all
}

// Error is a configuration error about one variable.
type Error struct {
	Var, Value, Problem string
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %q %s", e.Var, e.Value, e.Problem) }

// Load reads the configuration through lookup (os.LookupEnv in production) and
// validates it.
func Load(lookup func(string) (string, bool)) (*Config, error) {
	vars := map[string]string{}
	for _, f := range fields() {
		if v, ok := lookup(f.Var); ok {
			vars[f.Var] = v
		}
	}
	var c Config
	if err := env.ParseWithOptions(&c, env.Options{Environment: vars}); err != nil {
		var agg env.AggregateError
		if errors.As(err, &agg) {
			for _, e := range agg.Errors {
				var pe env.ParseError
				if errors.As(e, &pe) {
					name := varOf(pe.Name)
					return nil, &Error{Var: name, Value: vars[name], Problem: "is not a valid " + kind(pe.Type)}
				}
			}
		}
		return nil, err
	}
	// A variable set to "" means empty, not "use the default": DOORMAN_STATE_FILE=
	// turns the state file off. (The env package applies defaults to empty values.)
	rv := reflect.ValueOf(&c).Elem()
	for i, f := range reflect.VisibleFields(rv.Type()) {
		if v, ok := vars[f.Tag.Get("env")]; ok && v == "" && f.Type.Kind() == reflect.String {
			rv.Field(i).SetString("")
		}
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

func kind(t reflect.Type) string {
	switch t {
	case reflect.TypeFor[time.Duration]():
		return "duration (e.g. 90s, 10m, 1h)"
	case reflect.TypeFor[bool]():
		return "boolean (true or false)"
	case reflect.TypeFor[int]():
		return "integer"
	case reflect.TypeFor[float64]():
		return "number"
	}
	return t.String()
}

// Validate checks every value and parses the lists.
func (c *Config) Validate() error {
	if err := c.parseLists(); err != nil {
		return err
	}
	var err error
	for _, a := range []struct {
		name, val string
		out       *Listen
	}{{"DOORMAN_DECIDE_ADDR", c.DecideAddr, &c.DecideListen}, {"DOORMAN_API_ADDR", c.APIAddr, &c.APIListen}} {
		if *a.out, err = parseListen(a.val); err != nil {
			return &Error{Var: a.name, Value: a.val, Problem: err.Error()}
		}
	}
	if c.APIToken == "" && !c.APIListen.Local() {
		return &Error{Var: "DOORMAN_API_ADDR", Value: c.APIAddr,
			Problem: "is neither loopback nor a unix socket; set DOORMAN_API_TOKEN to expose the API"}
	}
	if strings.ContainsAny(c.APIToken, " \t\r\n") {
		return &Error{Var: "DOORMAN_API_TOKEN", Value: "(hidden)", Problem: "must not contain white space"}
	}
	if !validHeaderName(c.ClientIPHeader) {
		return &Error{Var: "DOORMAN_CLIENT_IP_HEADER", Value: c.ClientIPHeader, Problem: "is not a header name"}
	}
	checks := []struct {
		ok       bool
		name     string
		val      any
		expected string
	}{
		{c.MaxFailures >= 1 && c.MaxFailures <= 1000, "DOORMAN_MAX_FAILURES", c.MaxFailures, "must be from 1 to 1000"},
		{c.FindTime > 0, "DOORMAN_FIND_TIME", c.FindTime, "must be positive"},
		{c.BanTime > 0, "DOORMAN_BAN_TIME", c.BanTime, "must be positive"},
		{c.BanFactor >= 1, "DOORMAN_BAN_FACTOR", c.BanFactor, "must be at least 1"},
		{c.MaxBanTime >= c.BanTime, "DOORMAN_MAX_BAN_TIME", c.MaxBanTime, "must be at least DOORMAN_BAN_TIME"},
		{c.MaxBanTime <= 87600*time.Hour, "DOORMAN_MAX_BAN_TIME", c.MaxBanTime, "must be at most 87600h (ten years)"},
		{c.IPv4Prefix >= 8 && c.IPv4Prefix <= 32, "DOORMAN_IPV4_PREFIX", c.IPv4Prefix, "must be from 8 to 32"},
		{c.IPv6Prefix >= 16 && c.IPv6Prefix <= 128, "DOORMAN_IPV6_PREFIX", c.IPv6Prefix, "must be from 16 to 128"},
		{c.RangeThreshold >= 0 && c.RangeThreshold <= 1000, "DOORMAN_RANGE_THRESHOLD", c.RangeThreshold, "must be from 0 (off) to 1000"},
		{c.RangeThreshold == 0 || c.IPv4RangePrefix >= decide.WidestIPv4 && c.IPv4RangePrefix < c.IPv4Prefix, "DOORMAN_IPV4_RANGE_PREFIX", c.IPv4RangePrefix,
			fmt.Sprintf("must be from %d to DOORMAN_IPV4_PREFIX-1 (%d)", decide.WidestIPv4, c.IPv4Prefix-1)},
		{c.RangeThreshold == 0 || c.IPv6RangePrefix >= decide.WidestIPv6 && c.IPv6RangePrefix < c.IPv6Prefix, "DOORMAN_IPV6_RANGE_PREFIX", c.IPv6RangePrefix,
			fmt.Sprintf("must be from %d to DOORMAN_IPV6_PREFIX-1 (%d)", decide.WidestIPv6, c.IPv6Prefix-1)},
		{c.BanJitter >= 0 && c.BanJitter <= 1, "DOORMAN_BAN_JITTER", c.BanJitter, "must be from 0 to 1"},
		{c.MaxEvents >= 0 && c.MaxEvents <= 10_000_000, "DOORMAN_MAX_EVENTS", c.MaxEvents, "must be from 0 (none kept) to 10000000"},
		{c.MaxBans >= 1, "DOORMAN_MAX_BANS", c.MaxBans, "must be at least 1"},
		{c.MaxTracked >= 1, "DOORMAN_MAX_TRACKED", c.MaxTracked, "must be at least 1"},
		{c.LogFormat == "text" || c.LogFormat == "json", "DOORMAN_LOG_FORMAT", c.LogFormat, "must be text or json"},
		{oneOf(strings.ToLower(c.LogLevel), "debug", "info", "warn", "error"), "DOORMAN_LOG_LEVEL", c.LogLevel, "must be debug, info, warn or error"},
		{c.RedisURL == "" || strings.HasPrefix(c.RedisURL, "redis://") || strings.HasPrefix(c.RedisURL, "rediss://") || strings.HasPrefix(c.RedisURL, "unix://"),
			"DOORMAN_REDIS_URL", "(hidden: it may hold a password)", "must start with redis://, rediss:// or unix://"},
		{c.RedisPrefix != "" && !strings.ContainsAny(c.RedisPrefix, "{}* \t\r\n"), "DOORMAN_REDIS_PREFIX", c.RedisPrefix, "must be non-empty, without braces, * or white space"},
	}
	for _, k := range checks {
		if !k.ok {
			return &Error{Var: k.name, Value: fmt.Sprint(k.val), Problem: k.expected}
		}
	}
	for _, v := range []func() error{c.validateCache, c.validateNotify, c.validateAccounts, c.validateFeeds, c.validateGate, c.validateLearn, c.validateKernel} {
		if err := v(); err != nil {
			return err
		}
	}
	return nil
}

// parseLists parses the address lists into their prefixes.
func (c *Config) parseLists() error {
	var err error
	lists := []struct {
		name, val string
		out       *[]netip.Prefix
	}{
		{"DOORMAN_TRUSTED_PROXIES", c.TrustedProxies, &c.Trusted},
		{"DOORMAN_ALLOW", c.Allow, &c.AllowList},
		{"DOORMAN_DENY", c.Deny, &c.DenyList},
		{"DOORMAN_NEVER_BAN", c.NeverBan, &c.NeverBanList},
		{"DOORMAN_NAT64_PREFIXES", c.NAT64Prefixes, &c.NAT64List},
	}
	for _, l := range lists {
		if *l.out, err = decide.ParseList(l.val); err != nil {
			return fmt.Errorf("%s: %v", l.name, err)
		}
	}
	for _, p := range c.NAT64List {
		if !p.Addr().Is6() || p.Bits() != 96 {
			return &Error{Var: "DOORMAN_NAT64_PREFIXES", Value: p.String(), Problem: "is not an IPv6 /96 (RFC 6052)"}
		}
	}
	return nil
}

// Policy returns the ban policy.
func (c *Config) Policy() decide.Policy {
	return decide.Policy{MaxFailures: c.MaxFailures, FindTime: c.FindTime, BanTime: c.BanTime, BanFactor: c.BanFactor,
		MaxBanTime: c.MaxBanTime, IPv4Prefix: c.IPv4Prefix, IPv6Prefix: c.IPv6Prefix,
		RangeThreshold: c.RangeThreshold, IPv4RangePrefix: c.IPv4RangePrefix, IPv6RangePrefix: c.IPv6RangePrefix,
		Jitter: c.BanJitter, NAT64: c.NAT64List}
}

func oneOf(s string, set ...string) bool {
	for _, x := range set {
		if s == x {
			return true
		}
	}
	return false
}

func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r == '_') {
			return false
		}
	}
	return true
}

// Listen is a listen address: Network "tcp" with Address host:port, or
// "unix" with Address the socket's path (from unix:/path).
type Listen struct{ Network, Address string }

// Unix reports whether l is a unix socket.
func (l Listen) Unix() bool { return l.Network == "unix" }

// parseListen accepts host:port and unix:/path.
func parseListen(s string) (Listen, error) {
	if path, ok := strings.CutPrefix(s, "unix:"); ok {
		if path == "" {
			return Listen{}, errors.New("has no socket path")
		}
		return Listen{Network: "unix", Address: path}, nil
	}
	if _, _, err := net.SplitHostPort(s); err != nil {
		return Listen{}, errors.New("is not host:port or unix:/path")
	}
	return Listen{Network: "tcp", Address: s}, nil
}

// Local reports whether l is a unix socket or loopback only.
func (l Listen) Local() bool {
	if l.Unix() {
		return true
	}
	host, _, err := net.SplitHostPort(l.Address)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

// Field describes one variable.
// Field is one variable as the reference prints it.
type Field struct{ Var, Default, Help, Group string }

// Groups are the reference's sections, in the order printed; every variable's
// group tag names one of them (TestEveryVariableHasAGroup).
var Groups = []string{"listeners", "lists", "feeds", "bans", "ranges", "accounts", "gate", "state", "cluster", "notify", "cached mode", "learn", "kernel", "logs"}

// fields are the variables in the struct's order.
func fields() []Field {
	t := reflect.TypeFor[Config]()
	var out []Field
	for i := range t.NumField() {
		f := t.Field(i)
		name := f.Tag.Get("env")
		if name == "" || name == "-" {
			continue
		}
		out = append(out, Field{Var: name, Default: f.Tag.Get("envDefault"), Help: f.Tag.Get("help"), Group: f.Tag.Get("group")})
	}
	return out
}

// grouped are the variables by group, in the order of Groups.
func grouped() [][]Field {
	out := make([][]Field, len(Groups))
	for _, f := range fields() {
		for i, g := range Groups {
			if f.Group == g {
				out[i] = append(out[i], f)
			}
		}
	}
	return out
}

func varOf(field string) string {
	if f, ok := reflect.TypeFor[Config]().FieldByName(field); ok {
		return f.Tag.Get("env")
	}
	return field
}

// WriteReference prints the variable tables, one per group; markdown selects
// Markdown tables under "### group" headings.
func WriteReference(w io.Writer, markdown bool) error {
	if markdown {
		for i, fs := range grouped() {
			if i > 0 {
				fmt.Fprintln(w)
			}
			fmt.Fprintf(w, "### %s\n\n| variable | default | meaning |\n| --- | --- | --- |\n", Groups[i])
			for _, f := range fs {
				def := "`" + f.Default + "`"
				if f.Default == "" {
					def = "(unset)"
				}
				if _, err := fmt.Fprintf(w, "| `%s` | %s | %s |\n", f.Var, def, strings.ReplaceAll(f.Help, "|", "\\|")); err != nil {
					return err
				}
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for i, fs := range grouped() {
		if i > 0 {
			fmt.Fprintln(tw)
		}
		fmt.Fprintf(tw, "# %s\n", Groups[i])
		for _, f := range fs {
			def := f.Default
			if def == "" {
				def = "(unset)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\n", f.Var, def, f.Help)
		}
	}
	return tw.Flush()
}
