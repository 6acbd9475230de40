package config

import "net/url"

// validateNotify checks DOORMAN_NOTIFY_URL, DOORMAN_NOTIFY_FORMAT and
// DOORMAN_NOTIFY_PROXY, and parses the proxy into NotifyProxyURL. A URL is
// quoted only up to its host: a Slack webhook keeps its secret in the path,
// a proxy URL may carry a password.
func (c *Config) validateNotify() error {
	if c.NotifyURL != "" {
		if _, ok := httpURL(c.NotifyURL); !ok {
			return &Error{Var: "DOORMAN_NOTIFY_URL", Value: redactURL(c.NotifyURL), Problem: "is not an http:// or https:// URL"}
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
		u, ok := httpURL(c.NotifyProxy)
		if !ok {
			return &Error{Var: "DOORMAN_NOTIFY_PROXY", Value: redactURL(c.NotifyProxy), Problem: "is not an http:// or https:// URL"}
		}
		c.NotifyProxyURL = u
	}
	return nil
}

// httpURL parses an absolute http or https URL with a host.
func httpURL(s string) (*url.URL, bool) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, false
	}
	return u, true
}

// redactURL keeps a URL's scheme and host; what cannot be parsed as one is
// cut after 16 bytes.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		if len(s) > 16 {
			return s[:16] + "…"
		}
		return s
	}
	return u.Scheme + "://" + u.Host + "/…"
}
