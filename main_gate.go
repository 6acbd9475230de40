package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/doorman/doorman/internal/cluster"
	"github.com/doorman/doorman/internal/config"
	"github.com/doorman/doorman/internal/engine"
	"github.com/doorman/doorman/internal/gate"
	"github.com/doorman/doorman/internal/server"
	"github.com/doorman/doorman/internal/store"
	"github.com/doorman/doorman/internal/ui"
)

// startGate wires the gate when it is on (docs/gate.md): the service, its
// decision paths on d, its API on api, its part of the status page, and the
// gate listener's server, returned with a stop function for the cluster
// sync (run it before the state file closes). Off: d's gate paths ask for a
// gate that does not exist (401, fail closed), no server.
func startGate(cfg *config.Config, st *store.Store, local *engine.Local, accounts *engine.Accounts,
	d *server.Decider, api *server.API, page *ui.UI, log *slog.Logger) (*fasthttp.Server, func(), error) {
	d.Gate = &server.GateCheck{BypassAllow: cfg.GateBypassAllow, Origins: server.GateOrigins(cfg.GateOriginList)}
	if !cfg.GateOn() {
		return nil, func() {}, nil
	}
	o := gate.Options{Store: st, Key: []byte(cfg.GateKey), Origins: cfg.GateOriginList,
		SessionTTL: cfg.GateSessionTTL, EnrollTTL: cfg.GateEnrollTTL, TOTP: cfg.GateTOTP,
		Service: local, Accounts: accounts, Now: time.Now, Log: log}
	var share *cluster.GateShare
	if cfg.RedisURL != "" {
		var err error
		if share, err = cluster.NewGateShare(cfg.RedisURL, cfg.RedisPrefix, log); err != nil {
			return nil, nil, usageError{fmt.Errorf("DOORMAN_REDIS_URL: %q: %v", cluster.Redact(cfg.RedisURL), err)}
		}
		o.Shared = share
	}
	g, keySource, err := gate.New(o)
	if err != nil {
		return nil, nil, err
	}
	gm := server.NewGateMetrics(d.Metrics.Set())
	d.Gate.Sessions, d.Gate.Metrics, api.Gate = g.Sessions(), gm, g
	page.UseGate(g)
	pages := &server.GatePages{Gate: g, Service: local, Header: cfg.ClientIPHeader, Trusted: server.NewTrusted(cfg.Trusted),
		Unix: cfg.GateListen.Unix(), BypassAllow: cfg.GateBypassAllow, Metrics: gm, Now: time.Now, Log: log}
	if err := pages.Init(); err != nil {
		return nil, nil, err
	}
	stop := func() {}
	if share != nil {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { g.Run(ctx); close(done) }()
		stop = func() { cancel(); <-done; share.Close() }
	}
	log.Info("gate", "addr", cfg.GateAddr, "origins", cfg.GateOrigins, "totp", cfg.GateTOTP,
		"bypass_allow", cfg.GateBypassAllow, "credentials", len(g.Credentials()), "key", keySource)
	return server.NewGateServer(pages, log), stop, nil
}
