package main

import (
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/doorman/doorman/internal/config"
	"github.com/doorman/doorman/internal/engine"
	"github.com/doorman/doorman/internal/gate"
	"github.com/doorman/doorman/internal/server"
	"github.com/doorman/doorman/internal/store"
)

// startGate wires the gate when it is on (docs/gate.md): the service, its
// decision paths on d, its API on api, and the gate listener, returned with
// its server. Off: d's gate paths ask for a gate that does not exist (401,
// fail closed) and nothing listens.
func startGate(cfg *config.Config, st *store.Store, svc engine.Service, acct engine.AccountService,
	d *server.Decider, api *server.API, log *slog.Logger) (*fasthttp.Server, net.Listener, error) {
	d.Gate = &server.GateCheck{BypassAllow: cfg.GateBypassAllow, Origins: server.GateOrigins(cfg.GateOriginList)}
	if !cfg.GateOn() {
		return nil, nil, nil
	}
	g, keySource, err := gate.New(gate.Options{Store: st, Key: []byte(cfg.GateKey), Origins: cfg.GateOriginList,
		SessionTTL: cfg.GateSessionTTL, EnrollTTL: cfg.GateEnrollTTL, TOTP: cfg.GateTOTP,
		Service: svc, Accounts: acct, Now: time.Now, Log: log})
	if err != nil {
		return nil, nil, err
	}
	d.Gate.Sessions, api.Gate = g.Sessions(), g
	pages := &server.GatePages{Gate: g, Service: svc, Header: cfg.ClientIPHeader, Trusted: server.NewTrusted(cfg.Trusted),
		Unix: cfg.GateListen.Unix(), BypassAllow: cfg.GateBypassAllow, Now: time.Now, Log: log}
	if err := pages.Init(); err != nil {
		return nil, nil, err
	}
	ln, err := server.Listen(cfg.GateListen.Network, cfg.GateListen.Address, 0o666)
	if err != nil {
		return nil, nil, fmt.Errorf("DOORMAN_GATE_ADDR: %w", err)
	}
	log.Info("gate", "addr", cfg.GateAddr, "origins", cfg.GateOrigins, "totp", cfg.GateTOTP,
		"bypass_allow", cfg.GateBypassAllow, "credentials", len(g.Credentials()), "key", keySource)
	return server.NewGateServer(pages, log), ln, nil
}
