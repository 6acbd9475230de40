package config

import (
	"net"
	"net/netip"
	"path/filepath"
	"strings"

	"github.com/doorman/doorman/internal/accesslog"
)

// LearnListen is the learning listener's address: Network "unixgram" with
// Address a socket path, or "udp" with Address a loopback host:port.
type LearnListen struct{ Network, Address string }

// validateLearn checks DOORMAN_LEARN_ADDR and DOORMAN_LEARN_RULES and parses
// them into LearnListen and LearnRuleSet. One without the other is refused:
// a listener with no rules would read records to no end, and rules with no
// listener would never be used.
func (c *Config) validateLearn() error {
	c.LearnListen, c.LearnRuleSet = LearnListen{}, nil
	rules, err := accesslog.ParseRules(c.LearnRules)
	if err != nil {
		return &Error{Var: "DOORMAN_LEARN_RULES", Value: c.LearnRules, Problem: "is invalid: " + err.Error()}
	}
	if c.LearnAddr == "" {
		if rules.Len() > 0 {
			return &Error{Var: "DOORMAN_LEARN_RULES", Value: c.LearnRules, Problem: "is set but DOORMAN_LEARN_ADDR is not"}
		}
		return nil
	}
	if rules.Len() == 0 {
		return &Error{Var: "DOORMAN_LEARN_ADDR", Value: c.LearnAddr, Problem: "is set but DOORMAN_LEARN_RULES names no login form"}
	}
	l, problem := parseLearnAddr(c.LearnAddr)
	if problem != "" {
		return &Error{Var: "DOORMAN_LEARN_ADDR", Value: c.LearnAddr, Problem: problem}
	}
	c.LearnListen, c.LearnRuleSet = l, rules
	return nil
}

// parseLearnAddr accepts unixgram:/absolute/path and udp:HOST:PORT with HOST
// a loopback address: a record names the client to ban, so only the proxy
// on this host may send one.
func parseLearnAddr(s string) (LearnListen, string) {
	if path, ok := strings.CutPrefix(s, "unixgram:"); ok {
		if !filepath.IsAbs(path) || filepath.Clean(path) != path {
			return LearnListen{}, "is not unixgram:/absolute/path"
		}
		return LearnListen{Network: "unixgram", Address: path}, ""
	}
	if hp, ok := strings.CutPrefix(s, "udp:"); ok {
		host, _, err := net.SplitHostPort(hp)
		if err != nil {
			return LearnListen{}, "is not udp:HOST:PORT"
		}
		if a, err := netip.ParseAddr(host); err != nil || !a.Unmap().IsLoopback() {
			return LearnListen{}, "must listen on a loopback address (udp:127.0.0.1:PORT or udp:[::1]:PORT): any sender could name an address to ban"
		}
		return LearnListen{Network: "udp", Address: hp}, ""
	}
	return LearnListen{}, "is not unixgram:/path or udp:127.0.0.1:PORT"
}
