// Command doorman answers nginx auth_request subrequests with 204 (allow) or
// 403 (deny) from CIDR lists and a table of bans, and takes failed-login
// reports from the app through a JSON webhook. See README.md and docs/.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/api"
	"github.com/doorman/doorman/internal/cluster"
	"github.com/doorman/doorman/internal/config"
	"github.com/doorman/doorman/internal/engine"
	"github.com/doorman/doorman/internal/kernel"
	"github.com/doorman/doorman/internal/lists"
	"github.com/doorman/doorman/internal/nginxcache"
	"github.com/doorman/doorman/internal/notify"
	"github.com/doorman/doorman/internal/server"
	"github.com/doorman/doorman/internal/store"
	"github.com/doorman/doorman/internal/ui"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // a second signal now ends the process at once
	}()
	err := run(ctx, os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "doorman:", err)
	}
	os.Exit(exitCode(err))
}

// usageError is a bad command line or configuration: exit status 2.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

func exitCode(err error) int {
	var u usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &u):
		return 2
	}
	return 1
}

// run is the whole program; tests call it directly.
func run(ctx context.Context, args []string, lookup func(string) (string, bool), stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, "doorman", version)
		return nil
	case "env":
		md := len(args) > 0 && args[0] == "-markdown"
		return config.WriteReference(stdout, md)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	cfg, err := config.Load(lookup)
	if err != nil {
		return usageError{err}
	}
	// The Redis URL is parsed whole here, not in config, which knows no Redis.
	if cfg.RedisURL != "" {
		if err := cluster.CheckURL(cfg.RedisURL); err != nil {
			return usageError{&config.Error{Var: "DOORMAN_REDIS_URL", Value: "(hidden: it may hold a password)", Problem: err.Error()}}
		}
	}
	switch cmd {
	case "serve":
		if len(args) > 0 {
			return usageError{fmt.Errorf("serve takes no arguments")}
		}
		// The heap is mostly the long-lived ban and failure tables, and the
		// decision path does not allocate, so collecting at 50% growth instead
		// of 100% costs little CPU and keeps RSS near the live tables
		// (1M bans: 255 instead of 324 bytes per ban). GOGC overrides it.
		if _, ok := lookup("GOGC"); !ok {
			debug.SetGCPercent(50)
		}
		return serve(ctx, cfg, stderr)
	case "bans", "ban", "unban", "check", "health", "events", "accounts", "unlock", "gate":
		return client(ctx, cfg, cmd, args, stdout)
	}
	return usageError{fmt.Errorf("unknown command %q\n%s", cmd, usage)}
}

const usage = `usage: doorman [command]
  serve                         run the sidecar (default)
  bans                          list active bans
  ban IP|CIDR [-for 1h] [-reason text]
  unban IP|CIDR                 lift the ban covering IP (or exactly CIDR)
  accounts                      list locked accounts
  unlock USER                   unlock an account and forget its failures
  gate enroll USER              print a one-time enrollment link for the gate (docs/gate.md)
  gate list|revoke ID|signout USER  the gate's credentials; revoke one; end a user's sessions
  check IP                      explain the decision for IP
  events [-n 100]               the last bans and unbans, newest first
  health                        exit 0 when the API answers /healthz
  env [-markdown]               every variable, its default and meaning
  version
Configuration is by DOORMAN_* environment variables; see 'doorman env'.
`

func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(cfg.LogLevel)) // validated by config
	opts := &slog.HandlerOptions{Level: lvl}
	if cfg.LogFormat == "json" {
		// JSON escapes C0 controls but passes DEL, C1 and bidi controls
		// through to whoever tails the log; a string that is not plain text
		// is logged in its quoted form, as the text format does.
		opts.ReplaceAttr = func(_ []string, a slog.Attr) slog.Attr {
			s, ok := "", false
			switch v := a.Value.Any().(type) {
			case string:
				s, ok = v, true
			case error:
				s, ok = v.Error(), true
			}
			if ok && !api.Printable(s) {
				a.Value = slog.StringValue(api.Visible(s))
			}
			return a
		}
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// serve runs the listeners until ctx ends, reloading the list files on SIGHUP.
func serve(ctx context.Context, cfg *config.Config, stderr io.Writer) error {
	log := newLogger(cfg, stderr)
	core := decide.New(cfg.Policy(), nil, cfg.MaxBans, cfg.MaxTracked)
	listsChanged := func() {}
	lm, err := newLists(cfg, core, &listsChanged, log)
	if err != nil {
		return usageError{err}
	}
	defer lm.Close()
	m := engine.NewMetrics(core.Stats, cfg.DryRun, time.Now)
	nft, st, err := openKernelAndState(cfg, core, m, log)
	if err != nil {
		return err
	}
	if st != nil {
		defer st.Close()
	}
	local := engine.NewLocal(core, st, log, m)
	stopKernel, err := kernelMode(nft, cfg, local, log)
	if err != nil {
		return err
	}
	defer stopKernel()
	history := local.NewHistory(cfg.MaxEvents)
	accounts, err := newAccounts(cfg, st, local, log)
	if err != nil {
		return err
	}
	stopNotify, err := notifications(cfg, local, m, log)
	if err != nil {
		return err
	}
	defer stopNotify() // one last attempt, before the state file closes
	redisUp, lastSync, stopCluster, err := clusterMode(cfg, local, accounts, log)
	if err != nil {
		return err
	}
	defer stopCluster() // before the state file closes
	cache, reloaded, stopCache := cachedMode(cfg, core, local, m, log)
	defer stopCache()
	listsChanged = reloaded
	defer runFeeds(cfg, lm, m)()

	d := &server.Decider{Core: local, Header: cfg.ClientIPHeader, Trusted: server.NewTrusted(cfg.Trusted),
		Unix: cfg.DecideListen.Unix(), DryRun: cfg.DryRun, ExposeReason: cfg.ExposeReason, Now: time.Now, Metrics: m, Log: log,
		Cache: cache}
	uo := ui.Options{Service: local, History: history, Accounts: accounts, Counts: m.Counts, Token: cfg.APIToken,
		Operators: cfg.AllowList, Version: version, DryRun: cfg.DryRun, RedisUp: redisUp, LastSync: lastSync, Log: log, Now: time.Now}
	page, stopPage, err := statusPage(cfg, uo, lm)
	if err != nil {
		return err
	}
	defer stopPage()
	api := newAPI(cfg, local, accounts, history, page, lm, log)
	seen, stopLearning, err := startLearning(cfg, d.Trusted, local, log)
	if err != nil {
		return err
	}
	defer stopLearning() // the last booking ends before the state file closes
	api.Seen = seen
	gateSrv, stopGate, err := startGate(cfg, st, local, accounts, d, api, page, log)
	if err != nil {
		return err
	}
	defer stopGate() // before the state file closes
	servers := []*fasthttp.Server{server.NewDecideServer(d, log), server.NewAPIServer(api, log)}
	if gateSrv != nil {
		servers = append(servers, gateSrv)
	}
	listeners, err := listen(cfg)
	if err != nil {
		return err
	}
	logStarted(cfg, core.Stats(time.Now()), log)
	return runServers(ctx, servers, listeners, func() { reload(lm, core, m, log) }, log)
}

// runServers serves each listener with its server until ctx ends or one
// stops; a SIGHUP runs reload.
func runServers(ctx context.Context, servers []*fasthttp.Server, listeners []net.Listener, reload func(), log *slog.Logger) error {
	errc := make(chan error, len(listeners))
	for i, ln := range listeners {
		go func() { errc <- servers[i].Serve(ln) }()
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-hup:
			reload()
		case err := <-errc:
			shutdown(servers, log)
			return fmt.Errorf("listener stopped: %w", err)
		case <-ctx.Done():
			log.Info("shutting down")
			shutdown(servers, log)
			return nil
		}
	}
}

// newAPI is the API listener's handler, the status page under /ui/.
func newAPI(cfg *config.Config, local *engine.Local, accounts *engine.Accounts, history *engine.History, page *ui.UI, lm *lists.Manager,
	log *slog.Logger) *server.API {
	a := &server.API{Service: local, Token: cfg.APIToken, Now: time.Now, Metrics: local.Metrics(), Log: log, Events: history, UI: page.Handle}
	a.Accounts, a.DryRun = accounts, cfg.DryRun
	a.Feed = server.NewFeed(local)
	if cfg.GeoIPDB != "" || cfg.ASNDB != "" {
		a.Locate = locate(lm)
	}
	return a
}

// newAccounts is the account service (DOORMAN_ACCOUNT_*), with its device key.
func newAccounts(cfg *config.Config, st *store.Store, local *engine.Local, log *slog.Logger) (*engine.Accounts, error) {
	accounts, keySource, err := engine.NewAccounts(engine.AccountOptions{Policy: cfg.AccountPolicy(), Max: cfg.MaxAccounts,
		Key: []byte(cfg.DeviceKey), TTL: cfg.DeviceTTL, Store: st, Now: time.Now}, local)
	if err != nil {
		return nil, err
	}
	if accounts.Enabled() {
		log.Info("accounts", "max_failures", cfg.AccountMaxFailures, "find_time", cfg.AccountFindTime, "lock_time", cfg.AccountLockTime, "device_key", keySource)
	}
	return accounts, nil
}

// statusPage is the status page with the feeds and address databases lm
// holds, its minute counters running until the returned stop.
func statusPage(cfg *config.Config, uo ui.Options, lm *lists.Manager) (*ui.UI, func(), error) {
	if len(cfg.Feeds) > 0 {
		uo.Feeds = pageFeeds(lm)
	}
	if cfg.GeoIPDB != "" || cfg.ASNDB != "" {
		uo.Locate = pageLocate(lm)
	}
	page, err := ui.New(uo)
	if err != nil {
		return nil, nil, err
	}
	ctx, stop := context.WithCancel(context.Background())
	go page.Run(ctx)
	return page, stop, nil
}

// notifications starts the notifier when DOORMAN_NOTIFY_URL is set: an
// observer of local's events. It returns what stops it after one last
// attempt.
func notifications(cfg *config.Config, local *engine.Local, m *engine.Metrics, log *slog.Logger) (func(), error) {
	dropped := m.Set().NewCounter("doorman_notify_dropped_total")
	if cfg.NotifyURL == "" {
		return func() {}, nil
	}
	host, _ := os.Hostname()
	n, err := notify.New(notify.Options{URL: cfg.NotifyURL, Format: cfg.NotifyFormat, Proxy: cfg.NotifyProxyURL, Host: host, Dropped: dropped, Log: log})
	if err != nil {
		return nil, usageError{err}
	}
	local.OnEvent(n.Observe)
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { n.Run(ctx); close(done) }()
	return func() { stop(); <-done }, nil
}

// clusterMode makes Redis the backend when DOORMAN_REDIS_URL is set
// (docs/cluster.md) and starts its sync loop. It returns the status page's
// cluster status (nil in single mode) and what stops the loop.
func clusterMode(cfg *config.Config, local *engine.Local, accounts *engine.Accounts, log *slog.Logger) (func() bool, func() time.Time, func(), error) {
	if cfg.RedisURL == "" {
		return nil, nil, func() {}, nil
	}
	cl, err := cluster.New(cluster.Options{URL: cfg.RedisURL, Prefix: cfg.RedisPrefix, Local: local, Log: log})
	if err != nil {
		return nil, nil, nil, usageError{fmt.Errorf("DOORMAN_REDIS_URL: %q: %v", cluster.Redact(cfg.RedisURL), err)}
	}
	cl.Accounts(accounts) // before Run: the first sync shares the device key
	local.UseBackend(cl)
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { cl.Run(ctx); close(done) }()
	log.Info("cluster mode", "redis", cluster.Redact(cfg.RedisURL), "prefix", cfg.RedisPrefix)
	return cl.Up, cl.LastSync, func() { stop(); <-done }, nil
}

// cachedMode sets up nginx's cached mode when DOORMAN_NGINX_REFRESH_URLS is
// set (docs/nginx.md): the refresher is a hook of local, so each change is
// refreshed in nginx before its call answers and reported in its receipt
// (proxies_refreshed). It returns the decision handler's Cache, what a list
// reload must run after the swap, and what stops the refresher. In plain
// mode: a nil Cache and no-ops.
func cachedMode(cfg *config.Config, core *decide.Core, local *engine.Local, m *engine.Metrics, log *slog.Logger) (*server.Cache, func(), func()) {
	if len(cfg.RefreshURLs) == 0 {
		return nil, func() {}, func() {}
	}
	set := nginxcache.New(cfg.CacheTracked, cfg.CacheTTL+nginxcache.Margin)
	r := nginxcache.NewRefresher(nginxcache.RefresherOptions{URLs: cfg.RefreshURLs, Set: set, TTL: cfg.CacheTTL,
		Verdict: local.Decide, Metrics: m.Set(), Log: log, Now: time.Now})
	local.AddHook(r)
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }() // changes learned from the cluster
	reloaded := func() {
		c, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		r.Reloaded(c)
	}
	log.Info("cached mode", "refresh_urls", cfg.RefreshURLs, "ttl", cfg.CacheTTL, "tracked", cfg.CacheTracked)
	return &server.Cache{Set: set, TTL: cfg.CacheTTL, Failures: core.Failures, NAT64: cfg.NAT64List}, reloaded, func() { stop(); <-done }
}

// logStarted writes the start line.
func logStarted(cfg *config.Config, stats decide.Stats, log *slog.Logger) {
	log.Info("doorman started", "version", version, "decide", cfg.DecideAddr, "api", cfg.APIAddr,
		"allow", stats.Allow, "deny", stats.Deny, "never_ban", stats.NeverBan, "bans", stats.ActiveBans,
		"state_file", cfg.StateFile, "dry_run", cfg.DryRun)
}

// listen opens the decision and API listeners and, when the gate is on,
// the gate listener; on an error none stays open. The decision listener's
// connections are watched against server.DecideLimits.
func listen(cfg *config.Config) ([]net.Listener, error) {
	type addr struct {
		name string
		l    config.Listen
		perm os.FileMode
	}
	addrs := []addr{{"DOORMAN_DECIDE_ADDR", cfg.DecideListen, 0o666}, {"DOORMAN_API_ADDR", cfg.APIListen, 0o660}}
	if cfg.GateOn() {
		addrs = append(addrs, addr{"DOORMAN_GATE_ADDR", cfg.GateListen, 0o666})
	}
	var lns []net.Listener
	for _, a := range addrs {
		ln, err := server.Listen(a.l.Network, a.l.Address, a.perm)
		if err != nil {
			for _, open := range lns {
				open.Close()
			}
			return nil, fmt.Errorf("%s: %w", a.name, err)
		}
		lns = append(lns, ln)
	}
	lns[0] = server.Watch(lns[0], server.DecideLimits)
	return lns, nil
}

// reload reads the list files and the address databases again (SIGHUP);
// on an error the lists in force stay.
func reload(lm *lists.Manager, core *decide.Core, m *engine.Metrics, log *slog.Logger) {
	if err := lm.Reload(); err != nil {
		m.ReloadsFail.Inc()
		log.Error("reload failed; keeping the lists in force", "err", err)
		return
	}
	m.ReloadsOK.Inc()
	l := core.Lists()
	allow, deny, never := l.Sizes()
	log.Info("lists reloaded", "allow", allow, "deny", deny, "never_ban", never, "sourced", l.Sourced())
}

func shutdown(servers []*fasthttp.Server, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, s := range servers {
		if err := s.ShutdownWithContext(ctx); err != nil {
			log.Warn("shutdown", "err", err)
		}
	}
}

// openKernelAndState opens the kernel's table (nil when off), then the
// state file; when the state file fails the table is closed.
func openKernelAndState(cfg *config.Config, core *decide.Core, m *engine.Metrics, log *slog.Logger) (*kernel.Table, *store.Store, error) {
	nft, err := openKernel(cfg, core, m, log)
	if err != nil {
		return nil, nil, err
	}
	st, err := openState(cfg, core, log)
	if err != nil && nft != nil {
		nft.Close()
	}
	return nft, st, err
}

// openState opens the state file and loads its bans into core. A damaged file
// stops the start, unless DOORMAN_STATE_RESET moves it aside.
func openState(cfg *config.Config, core *decide.Core, log *slog.Logger) (*store.Store, error) {
	if cfg.StateFile == "" {
		return nil, nil
	}
	st, err := store.Open(cfg.StateFile)
	var corrupt *store.CorruptError
	if errors.As(err, &corrupt) && cfg.StateReset {
		moved, merr := store.MoveAside(cfg.StateFile, time.Now())
		if merr != nil {
			return nil, fmt.Errorf("%w; moving it aside failed: %v", err, merr)
		}
		log.Warn("state file unreadable; moved aside, starting empty", "file", cfg.StateFile, "moved_to", moved, "err", corrupt.Err)
		st, err = store.Open(cfg.StateFile)
	}
	if err != nil {
		return nil, err
	}
	now := time.Now()
	n, err := engine.Restore(core, st, now)
	if err != nil {
		if n == 0 {
			st.Close()
			return nil, err
		}
		log.Warn("state file cleanup failed", "err", err)
	}
	log.Info("state loaded", "file", cfg.StateFile, "records", n, "active", core.Stats(now).ActiveBans)
	return st, nil
}
