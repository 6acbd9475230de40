package config

import "github.com/doorman/doorman/internal/notify"

// validateNotify checks DOORMAN_NOTIFY_URL, DOORMAN_NOTIFY_FORMAT and
// DOORMAN_NOTIFY_PROXY, and parses the proxy into NotifyProxyURL. A URL is
// quoted only up to its host: a Slack webhook keeps its secret in the path,
// a proxy URL may carry a password.
func (c *Config) validateNotify() error {
	if c.NotifyURL != "" {
		if _, err := notify.ParseURL(c.NotifyURL); err != nil {
			return &Error{Var: "DOORMAN_NOTIFY_URL", Value: notify.Redact(c.NotifyURL), Problem: err.Error()}
		}
	}
	if c.NotifyFormat == "" {
		c.NotifyFormat = "json" // set but empty: the default, as notify has always read it
	}
	if !oneOf(c.NotifyFormat, "json", "slack") {
		return &Error{Var: "DOORMAN_NOTIFY_FORMAT", Value: c.NotifyFormat, Problem: "must be json or slack"}
	}
	c.NotifyProxyURL = nil
	if c.NotifyProxy != "" {
		u, err := notify.ParseURL(c.NotifyProxy)
		if err != nil {
			return &Error{Var: "DOORMAN_NOTIFY_PROXY", Value: notify.Redact(c.NotifyProxy), Problem: err.Error()}
		}
		c.NotifyProxyURL = u
	}
	return nil
}
