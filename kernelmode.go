package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/config"
	"github.com/doorman/doorman/internal/engine"
	"github.com/doorman/doorman/internal/kernel"
	"github.com/doorman/doorman/internal/throttle"
)

// openKernel connects to netfilter when DOORMAN_NFT_TABLE is set
// (docs/kernel.md), before any file is touched: without CAP_NET_ADMIN the
// start is refused (exit 2) and says what is missing. Off: nil.
func openKernel(cfg *config.Config, m *engine.Metrics, log *slog.Logger) (*kernel.Table, error) {
	if cfg.NFTTable == "" {
		return nil, nil
	}
	t, err := kernel.Open(kernel.Options{Name: cfg.NFTTable, Hooks: cfg.NFTHookList, Ports: cfg.NFTPortList,
		MinCount: cfg.NFTMinCount, Max: cfg.MaxBans, NeverBan: cfg.NeverBanList, Metrics: m.Set(), Log: log})
	if errors.Is(err, kernel.ErrNoPermission) {
		return nil, usageError{&config.Error{Var: "DOORMAN_NFT_TABLE", Value: cfg.NFTTable, Problem: "is set, but " + err.Error() +
			"; or leave DOORMAN_NFT_TABLE empty"}}
	}
	if err != nil {
		return nil, fmt.Errorf("DOORMAN_NFT_TABLE: %q: %w", cfg.NFTTable, err)
	}
	return t, nil
}

// startKernel writes the bans in memory (restored from the state file) to
// t in one transaction, then keeps the kernel in step: each ban and unban,
// also those learned from the cluster, is written before the call that made
// it answers (engine.Local.OnEvent runs first), and every DOORMAN_NFT_CHECK
// the sets are compared and repaired. It returns the API's report of whether
// a ban is in the kernel and what stops it all. t nil: nil and a no-op.
func startKernel(t *kernel.Table, cfg *config.Config, local *engine.Local, log *slog.Logger) (func(decide.Ban) bool, func(), error) {
	if t == nil {
		return nil, func() {}, nil
	}
	start := time.Now()
	bans := local.Bans(start)
	if err := t.Rebuild(bans, start); err != nil {
		t.Close()
		return nil, nil, err
	}
	log.Info("kernel bans", "table", t.String(), "bans", len(bans), "took", time.Since(start).Round(time.Millisecond),
		"min_count", cfg.NFTMinCount, "check", cfg.NFTCheck)
	warn := throttle.New(time.Minute)
	local.OnEvent(func(e engine.Event) {
		var err error
		switch e.Type {
		case engine.EventBan:
			b, ok := local.Record(e.Key)
			if !ok { // evicted since: what the event says
				b = decide.Ban{Key: e.Key, Until: e.Until, Count: e.Count, Manual: e.Reason == "manual", Range: e.Reason == "range"}
			}
			err = t.Apply([]decide.Ban{b}, nil, e.Time)
		case engine.EventUnban:
			err = t.Apply(nil, []netip.Prefix{e.Key}, e.Time)
		default:
			return
		}
		if err != nil {
			if skipped, ok := warn.Allow("write", time.Now()); ok {
				log.Error("kernel ban write failed; the next check repairs it", "type", e.Type, "key", e.Key.String(), "err", err, "since_last_logged", skipped)
			}
		}
	})
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(cfg.NFTCheck)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			now := time.Now()
			drift, err := t.Check(local.Bans(now), now)
			if err != nil {
				log.Error("kernel ban check failed", "table", cfg.NFTTable, "err", err)
			} else if drift > 0 {
				log.Warn("kernel bans repaired", "table", cfg.NFTTable, "elements", drift)
			}
		}
	}()
	return t.Holds, func() {
		stop()
		<-done
		if cfg.NFTRemoveOnStop {
			if err := t.Remove(); err != nil {
				log.Error("removing the kernel table", "table", cfg.NFTTable, "err", err)
			} else {
				log.Info("kernel table removed", "table", cfg.NFTTable)
			}
		}
		t.Close()
	}, nil
}
