package main

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/gaissmai/bart"

	"github.com/doorman/doorman/internal/config"
	"github.com/doorman/doorman/internal/engine"
	"github.com/doorman/doorman/internal/learn"
	"github.com/doorman/doorman/internal/requestid"
)

// startLearning opens the learning listener (DOORMAN_LEARN_ADDR) and runs it
// until stop, which returns once the records read are booked. seen is the
// request ids it shares with the webhook, so that a login both reported and
// learned counts once; learning off: nil, and stop does nothing.
func startLearning(cfg *config.Config, trusted *bart.Lite, local *engine.Local, log *slog.Logger) (seen *requestid.Seen, stop func(), err error) {
	if cfg.LearnRuleSet == nil {
		return nil, func() {}, nil
	}
	seen = requestid.New(learn.SeenMax, learn.SeenWindow)
	ln, err := learn.Listen(learn.Options{Network: cfg.LearnListen.Network, Address: cfg.LearnListen.Address, Rules: cfg.LearnRuleSet,
		Trusted: trusted, Local: local, Seen: seen, Metrics: local.Metrics().Set(), Log: log, Now: time.Now})
	if err != nil {
		return nil, nil, fmt.Errorf("DOORMAN_LEARN_ADDR: %w", err)
	}
	done := make(chan struct{})
	go func() { ln.Run(); close(done) }()
	log.Info("learning", "addr", cfg.LearnAddr, "rules", cfg.LearnRules)
	return seen, func() { ln.Close(); <-done }, nil
}
