package config

import (
	"net/url"
	"strings"
	"time"

	"github.com/doorman/doorman/decide"
)

// GateOn reports whether the gate is on: a listener and at least one origin.
func (c *Config) GateOn() bool { return c.GateAddr != "" && len(c.GateOriginList) > 0 }

func (c *Config) validateGate() error {
	c.GateOriginList = nil
	for o := range strings.SplitSeq(c.GateOrigins, ",") {
		o = strings.TrimSpace(o)
		if o == "" {
			continue
		}
		u, err := url.Parse(o)
		if err != nil || u.Host == "" || u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return &Error{Var: "DOORMAN_GATE_ORIGINS", Value: o, Problem: "is not an origin (scheme://host[:port], nothing after)"}
		}
		// A passkey and the session cookie are worth nothing over plain
		// HTTP, except on the developer's own machine.
		if u.Scheme != "https" && !(u.Scheme == "http" && u.Hostname() == "localhost") {
			return &Error{Var: "DOORMAN_GATE_ORIGINS", Value: o, Problem: "must be https:// (http:// only for localhost)"}
		}
		c.GateOriginList = append(c.GateOriginList, u)
	}
	for _, o := range c.GateOriginList[min(1, len(c.GateOriginList)):] {
		// One relying party: every origin must be its host or under it.
		rp := c.GateOriginList[0].Hostname()
		if h := o.Hostname(); h != rp && !strings.HasSuffix(h, "."+rp) {
			return &Error{Var: "DOORMAN_GATE_ORIGINS", Value: o.String(), Problem: "is not " + rp + " or under it (the first origin's host is the passkeys' relying party)"}
		}
	}
	c.GateListen = Listen{}
	if c.GateAddr != "" {
		l, err := parseListen(c.GateAddr)
		if err != nil {
			return &Error{Var: "DOORMAN_GATE_ADDR", Value: c.GateAddr, Problem: err.Error()}
		}
		c.GateListen = l
	}
	checks := []struct {
		ok            bool
		name, val, is string
	}{
		{c.GateSessionTTL >= time.Minute && c.GateSessionTTL <= 30*24*time.Hour, "DOORMAN_GATE_SESSION_TTL", c.GateSessionTTL.String(), "must be from 1m to 720h"},
		{c.GateEnrollTTL >= time.Minute && c.GateEnrollTTL <= 7*24*time.Hour, "DOORMAN_GATE_ENROLL_TTL", c.GateEnrollTTL.String(), "must be from 1m to 168h"},
		{c.GateKey == "" || len(c.GateKey) >= decide.GateKeyMin, "DOORMAN_GATE_KEY", "(hidden)", "must be at least 32 bytes"},
	}
	for _, k := range checks {
		if !k.ok {
			return &Error{Var: k.name, Value: k.val, Problem: k.is}
		}
	}
	return nil
}
