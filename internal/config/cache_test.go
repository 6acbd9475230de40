package config

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestCacheVariables(t *testing.T) {
	cases := []struct {
		name string
		env  map[string]string
		urls []string
		err  string
	}{
		{"defaults: plain mode", nil, nil, ""},
		{"two nginx", map[string]string{"DOORMAN_NGINX_REFRESH_URLS": "http://127.0.0.1/_doorman_refresh, https://[::1]:8443/_doorman_refresh"},
			[]string{"http://127.0.0.1/_doorman_refresh", "https://[::1]:8443/_doorman_refresh"}, ""},
		{"not http", map[string]string{"DOORMAN_NGINX_REFRESH_URLS": "ftp://127.0.0.1/x"}, nil,
			`DOORMAN_NGINX_REFRESH_URLS: "ftp://127.0.0.1/x" is not an http:// or https:// URL`},
		{"no host", map[string]string{"DOORMAN_NGINX_REFRESH_URLS": "http:///_doorman_refresh"}, nil, "DOORMAN_NGINX_REFRESH_URLS"},
		{"user", map[string]string{"DOORMAN_NGINX_REFRESH_URLS": "http://u:p@127.0.0.1/x"}, nil, "DOORMAN_NGINX_REFRESH_URLS"},
		{"ttl too short", map[string]string{"DOORMAN_CACHE_TTL": "500ms"}, nil, `DOORMAN_CACHE_TTL: "500ms" must be from 1s to 1h`},
		{"ttl too long", map[string]string{"DOORMAN_CACHE_TTL": "2h"}, nil, "DOORMAN_CACHE_TTL"},
		{"ttl not a duration", map[string]string{"DOORMAN_CACHE_TTL": "10"}, nil, `DOORMAN_CACHE_TTL: "10" is not a valid duration`},
		{"tracked 0", map[string]string{"DOORMAN_CACHE_TRACKED": "0"}, nil, `DOORMAN_CACHE_TRACKED: "0" must be from 1 to 100000000`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Load(func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok })
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(c.RefreshURLs, tc.urls) {
				t.Errorf("RefreshURLs = %q, want %q", c.RefreshURLs, tc.urls)
			}
			if tc.env == nil && (c.CacheTTL != 10*time.Second || c.CacheTracked != 1000000) {
				t.Errorf("defaults: DOORMAN_CACHE_TTL %v, DOORMAN_CACHE_TRACKED %d; want 10s, 1000000", c.CacheTTL, c.CacheTracked)
			}
		})
	}
}
