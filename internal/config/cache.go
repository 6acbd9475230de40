package config

import (
	"net/url"
	"strconv"
	"strings"
	"time"
)

// validateCache checks the cached mode's variables (docs/nginx.md) and splits
// DOORMAN_NGINX_REFRESH_URLS into RefreshURLs.
func (c *Config) validateCache() error {
	c.RefreshURLs = nil
	for _, s := range strings.Split(c.NginxRefreshURLs, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		u, err := url.Parse(s)
		if err != nil || u.Scheme != "http" && u.Scheme != "https" || u.Host == "" || u.User != nil || u.Fragment != "" {
			return &Error{Var: "DOORMAN_NGINX_REFRESH_URLS", Value: s, Problem: "is not an http:// or https:// URL (without user or #fragment)"}
		}
		c.RefreshURLs = append(c.RefreshURLs, s)
	}
	if c.CacheTTL < time.Second || c.CacheTTL > time.Hour {
		return &Error{Var: "DOORMAN_CACHE_TTL", Value: c.CacheTTL.String(), Problem: "must be from 1s to 1h"}
	}
	if c.CacheTracked < 1 || c.CacheTracked > 100_000_000 {
		return &Error{Var: "DOORMAN_CACHE_TRACKED", Value: strconv.Itoa(c.CacheTracked), Problem: "must be from 1 to 100000000"}
	}
	return nil
}
