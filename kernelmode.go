package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/config"
	"github.com/doorman/doorman/internal/engine"
	"github.com/doorman/doorman/internal/kernel"
)

// openKernel connects to netfilter when DOORMAN_NFT_TABLE is set
// (docs/kernel.md), before any file is touched: without CAP_NET_ADMIN the
// start is refused (exit 2) and says what is missing. Off: nil.
func openKernel(cfg *config.Config, core *decide.Core, m *engine.Metrics, log *slog.Logger) (*kernel.Table, error) {
	if cfg.NFTTable == "" {
		return nil, nil
	}
	t, err := kernel.Open(kernel.Options{Name: cfg.NFTTable, Hooks: cfg.NFTHookList, Ports: cfg.NFTPortList,
		MinCount: cfg.NFTMinCount, Max: cfg.MaxBans, NeverBan: cfg.NeverBanList, Record: core.Record, Bans: core.Bans,
		Check: cfg.NFTCheck, Metrics: m.Set(), Log: log})
	if errors.Is(err, kernel.ErrNoPermission) {
		return nil, usageError{&config.Error{Var: "DOORMAN_NFT_TABLE", Value: cfg.NFTTable, Problem: "is set, but " + err.Error() +
			"; or leave DOORMAN_NFT_TABLE empty"}}
	}
	if err != nil {
		return nil, fmt.Errorf("DOORMAN_NFT_TABLE: %q: %w", cfg.NFTTable, err)
	}
	return t, nil
}

// kernelMode writes the bans in memory (restored from the state file) to t
// in one transaction, then keeps the kernel in step: t is a hook of local,
// so each ban and unban is written before the call that made it answers and
// reported in its receipt ("kernel"); changes learned from the cluster and
// the check every DOORMAN_NFT_CHECK run in t.Run. It returns what stops it
// all (and removes the table with DOORMAN_NFT_REMOVE_ON_STOP). t nil: a
// no-op.
func kernelMode(t *kernel.Table, cfg *config.Config, local *engine.Local, log *slog.Logger) (func(), error) {
	if t == nil {
		return func() {}, nil
	}
	start := time.Now()
	bans := local.Bans(start)
	if err := t.Rebuild(bans, start); err != nil {
		t.Close()
		return nil, err
	}
	log.Info("kernel bans", "table", t.String(), "bans", len(bans), "took", time.Since(start).Round(time.Millisecond),
		"min_count", cfg.NFTMinCount, "check", cfg.NFTCheck)
	local.AddHook(t)
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { t.Run(ctx); close(done) }()
	return func() {
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
