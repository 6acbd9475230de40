package config

import (
	"strings"
	"testing"
)

func TestNotifyVariables(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		want string // error; empty: valid
	}{
		{"format", map[string]string{"DOORMAN_NOTIFY_URL": "https://hooks.example/x", "DOORMAN_NOTIFY_FORMAT": "slak"},
			`DOORMAN_NOTIFY_FORMAT: "slak" must be json or slack`},
		{"format without url", map[string]string{"DOORMAN_NOTIFY_FORMAT": "xml"}, `DOORMAN_NOTIFY_FORMAT: "xml" must be json or slack`},
		{"url without scheme", map[string]string{"DOORMAN_NOTIFY_URL": "hooks.example/x"},
			`DOORMAN_NOTIFY_URL: "hooks.example/x" is not an http:// or https:// URL`},
		{"url scheme", map[string]string{"DOORMAN_NOTIFY_URL": "ftp://hooks.example/x"}, `DOORMAN_NOTIFY_URL: "ftp://hooks.example/…" is not an http:// or https:// URL`},
		{"url without host", map[string]string{"DOORMAN_NOTIFY_URL": "http:///x"}, `DOORMAN_NOTIFY_URL: "http:///x" is not an http:// or https:// URL`},
		{"url unparseable", map[string]string{"DOORMAN_NOTIFY_URL": "http://h:port/x"}, `DOORMAN_NOTIFY_URL: "http://h:port/x" is not`},
		{"url secret hidden", map[string]string{"DOORMAN_NOTIFY_URL": "gopher://hooks.slack.example/services/T0/B0/secret"},
			`DOORMAN_NOTIFY_URL: "gopher://hooks.slack.example/…" is not an http:// or https:// URL`},
		{"proxy scheme", map[string]string{"DOORMAN_NOTIFY_PROXY": "socks5://proxy:1080"}, `DOORMAN_NOTIFY_PROXY: "socks5://proxy:1080/…" is not an http:// or https:// URL`},
		{"proxy without scheme", map[string]string{"DOORMAN_NOTIFY_PROXY": "proxy:3128"}, `DOORMAN_NOTIFY_PROXY: "proxy:3128" is not an http:// or https:// URL`},
		{"proxy password hidden", map[string]string{"DOORMAN_NOTIFY_PROXY": "ftp://user:secret@proxy:3128"},
			`DOORMAN_NOTIFY_PROXY: "ftp://proxy:3128/…" is not an http:// or https:// URL`},
		{"valid", map[string]string{"DOORMAN_NOTIFY_URL": "https://hooks.example/x", "DOORMAN_NOTIFY_FORMAT": "slack", "DOORMAN_NOTIFY_PROXY": "http://user:secret@proxy:3128"}, ""},
		{"empty format is json", map[string]string{"DOORMAN_NOTIFY_URL": "http://hooks.example/x", "DOORMAN_NOTIFY_FORMAT": ""}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(lookupFrom(tc.env))
			if tc.want == "" {
				if err != nil {
					t.Fatalf("err = %v, want none", err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("err = %v\nwant prefix %s", err, tc.want)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("error shows a secret: %v", err)
			}
		})
	}
}

func TestNotifyParsed(t *testing.T) {
	c, err := Load(lookupFrom(map[string]string{"DOORMAN_NOTIFY_PROXY": "http://proxy:3128", "DOORMAN_NOTIFY_FORMAT": ""}))
	if err != nil {
		t.Fatal(err)
	}
	if c.NotifyProxyURL == nil || c.NotifyProxyURL.String() != "http://proxy:3128" {
		t.Errorf("NotifyProxyURL = %v, want http://proxy:3128", c.NotifyProxyURL)
	}
	if c.NotifyFormat != "json" {
		t.Errorf("NotifyFormat = %q, want json (set but empty)", c.NotifyFormat)
	}
	if c, err = Load(lookupFrom(nil)); err != nil || c.NotifyProxyURL != nil {
		t.Errorf("unset: NotifyProxyURL = %v, %v; want nil", c.NotifyProxyURL, err)
	}
}
