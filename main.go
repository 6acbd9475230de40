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
	"github.com/doorman/doorman/internal/cluster"
	"github.com/doorman/doorman/internal/config"
	"github.com/doorman/doorman/internal/engine"
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
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// serve runs both listeners until ctx ends, reloading the list files on SIGHUP.
func serve(ctx context.Context, cfg *config.Config, stderr io.Writer) error {
	log := newLogger(cfg, stderr)
	lists, err := cfg.Lists()
	if err != nil {
		return usageError{err}
	}
	core := decide.New(cfg.Policy(), lists, cfg.MaxBans, cfg.MaxTracked)
	st, err := openState(cfg, core, log)
	if err != nil {
		return err
	}
	if st != nil {
		defer st.Close()
	}
	m := engine.NewMetrics(core.Stats, cfg.DryRun, time.Now)
	local := engine.NewLocal(core, st, log, m)
	history := local.NewHistory(cfg.MaxEvents)
	accounts, keySource, err := engine.NewAccounts(engine.AccountOptions{Policy: cfg.AccountPolicy(), Max: cfg.MaxAccounts,
		Key: []byte(cfg.DeviceKey), TTL: cfg.DeviceTTL, Store: st, Now: time.Now}, local)
	if err != nil {
		return err
	}
	if accounts.Enabled() {
		log.Info("accounts", "max_failures", cfg.AccountMaxFailures, "find_time", cfg.AccountFindTime, "lock_time", cfg.AccountLockTime, "device_key", keySource)
	}
	notifyDropped := m.Set().NewCounter("doorman_notify_dropped_total")
	if cfg.NotifyURL != "" {
		host, _ := os.Hostname()
		n, err := notify.New(notify.Options{URL: cfg.NotifyURL, Format: cfg.NotifyFormat, Proxy: cfg.NotifyProxyURL, Host: host, Dropped: notifyDropped, Log: log})
		if err != nil {
			return usageError{err}
		}
		n.Watch(local)
		notifyCtx, stopNotify := context.WithCancel(context.Background())
		notified := make(chan struct{})
		go func() { n.Run(notifyCtx); close(notified) }()
		defer func() { stopNotify(); <-notified }() // one last attempt, before the state file closes
	}
	var svc engine.Service = local
	var acct engine.AccountService = accounts
	var redisUp func() bool // the status page's cluster status
	var lastSync func() time.Time
	if cfg.RedisURL != "" {
		cl, err := cluster.New(cluster.Options{URL: cfg.RedisURL, Prefix: cfg.RedisPrefix, Local: local, Log: log})
		if err != nil {
			return usageError{fmt.Errorf("DOORMAN_REDIS_URL: %q: %v", cluster.Redact(cfg.RedisURL), err)}
		}
		syncCtx, stopSync := context.WithCancel(context.Background())
		synced := make(chan struct{})
		acct = cl.Accounts(accounts) // before Run: the first sync shares the device key
		go func() { cl.Run(syncCtx); close(synced) }()
		defer func() { stopSync(); <-synced }() // before the state file closes
		svc, redisUp, lastSync = cl, cl.Up, cl.LastSync
		log.Info("cluster mode", "redis", cluster.Redact(cfg.RedisURL), "prefix", cfg.RedisPrefix)
	}
	svc, cache, reloaded, stopCache := cachedMode(cfg, core, local, svc, m, log)
	defer stopCache()

	decideLn, err := server.Listen(cfg.DecideListen.Network, cfg.DecideListen.Address, 0o666)
	if err != nil {
		return fmt.Errorf("DOORMAN_DECIDE_ADDR: %w", err)
	}
	apiLn, err := server.Listen(cfg.APIListen.Network, cfg.APIListen.Address, 0o660)
	if err != nil {
		decideLn.Close()
		return fmt.Errorf("DOORMAN_API_ADDR: %w", err)
	}
	d := &server.Decider{Core: svc, Header: cfg.ClientIPHeader, Trusted: server.NewTrusted(cfg.Trusted),
		Unix: cfg.DecideListen.Unix(), DryRun: cfg.DryRun, ExposeReason: cfg.ExposeReason, Now: time.Now, Metrics: m, Log: log}
	d.Cache = cache
	page, err := ui.New(ui.Options{Service: svc, History: history, Accounts: acct, Counts: m.Counts, Token: cfg.APIToken,
		Version: version, DryRun: cfg.DryRun, RedisUp: redisUp, LastSync: lastSync, Log: log, Now: time.Now})
	if err != nil {
		return err
	}
	pageCtx, stopPage := context.WithCancel(context.Background())
	defer stopPage()
	go page.Run(pageCtx)
	api := &server.API{Service: svc, Token: cfg.APIToken, Now: time.Now, Metrics: m, Log: log, Events: history, UI: page.Handle}
	api.Accounts, api.DryRun = acct, cfg.DryRun
	servers := []*fasthttp.Server{server.NewDecideServer(d, log), server.NewAPIServer(api, log)}
	listeners := []net.Listener{decideLn, apiLn}
	gateSrv, gateLn, stopGate, err := startGate(cfg, st, svc, acct, d, api, page, log)
	if err != nil {
		decideLn.Close()
		apiLn.Close()
		return err
	}
	defer stopGate() // before the state file closes
	if gateSrv != nil {
		servers, listeners = append(servers, gateSrv), append(listeners, gateLn)
	}
	errc := make(chan error, len(listeners))
	for i, ln := range listeners {
		go func() { errc <- servers[i].Serve(ln) }()
	}
	stats := core.Stats(time.Now())
	log.Info("doorman started", "version", version, "decide", cfg.DecideAddr, "api", cfg.APIAddr,
		"allow", stats.Allow, "deny", stats.Deny, "never_ban", stats.NeverBan, "bans", stats.ActiveBans,
		"state_file", cfg.StateFile, "dry_run", cfg.DryRun)

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-hup:
			reload(cfg, local, m, log)
			reloaded()
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

func reload(cfg *config.Config, local *engine.Local, m *engine.Metrics, log *slog.Logger) {
	lists, err := cfg.Lists()
	if err != nil {
		m.ReloadsFail.Inc()
		log.Error("reload failed; keeping the lists in force", "err", err)
		return
	}
	local.SetLists(lists)
	m.ReloadsOK.Inc()
	allow, deny, never := lists.Sizes()
	log.Info("lists reloaded", "allow", allow, "deny", deny, "never_ban", never)
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
