package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/config"
	"github.com/doorman/doorman/internal/engine"
	"github.com/doorman/doorman/internal/nginxcache"
	"github.com/doorman/doorman/internal/server"
)

// cachedMode sets up nginx's cached mode when DOORMAN_NGINX_REFRESH_URLS is
// set (docs/nginx.md). It returns the service to serve — svc, wrapped so that
// each change is refreshed in nginx before its call answers —, the decision
// handler's Cache, what a list reload must run after the swap, and what stops
// the refresher. In plain mode: svc as it is, a nil Cache and no-ops.
func cachedMode(cfg *config.Config, core *decide.Core, local *engine.Local, svc engine.Service, m *engine.Metrics, log *slog.Logger) (engine.Service, *server.Cache, func(), func()) {
	if len(cfg.RefreshURLs) == 0 {
		return svc, nil, func() {}, func() {}
	}
	set := nginxcache.New(cfg.CacheTracked, cfg.CacheTTL+nginxcache.Margin)
	r := nginxcache.NewRefresher(nginxcache.RefresherOptions{URLs: cfg.RefreshURLs, Set: set, TTL: cfg.CacheTTL,
		Verdict: svc.Decide, Metrics: m.Set(), Log: log, Now: time.Now})
	local.OnEvent(r.Observe) // changes learned from the cluster
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	reloaded := func() {
		c, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		r.Reloaded(c)
	}
	log.Info("cached mode", "refresh_urls", cfg.RefreshURLs, "ttl", cfg.CacheTTL, "tracked", cfg.CacheTracked)
	cache := &server.Cache{Set: set, TTL: cfg.CacheTTL, Failures: core.Failures, NAT64: cfg.NAT64List}
	return nginxcache.Service{Service: svc, R: r}, cache, reloaded, func() { stop(); <-done }
}
