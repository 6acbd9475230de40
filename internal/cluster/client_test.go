package cluster

import (
	"strings"
	"testing"
)

// Every secret of a Redis URL is hidden by Redact: the userinfo's password
// and every password-like query parameter (a Sentinel URL carries the
// master's password as password=).
func TestRedact(t *testing.T) {
	tests := []struct {
		name, url, want string
		secrets         []string
	}{
		{"no secret", "redis://127.0.0.1:6379/1?dial_timeout=2s", "redis://127.0.0.1:6379/1?dial_timeout=2s", nil},
		{"userinfo", "redis://:Zq9sec@10.0.0.5:6379/0", "redis://:xxxxx@10.0.0.5:6379/0", []string{"Zq9sec"}},
		{"user and password", "rediss://doorman:Zq9sec@10.0.0.5:6380/0", "rediss://doorman:xxxxx@10.0.0.5:6380/0", []string{"Zq9sec"}},
		{"escaped password", "redis://u:Zq9%40sec@h:6379", "redis://u:xxxxx@h:6379", []string{"Zq9"}},
		{"sentinel", "redis://sent:Zq9sent@h:26379?master_name=main&password=Wx7mast&addr=h2:26379",
			"redis://sent:xxxxx@h:26379?master_name=main&password=xxxxx&addr=h2:26379", []string{"Zq9sent", "Wx7mast"}},
		{"sentinel_password", "redis://h:26379?master_name=main&sentinel_password=Zq9sent",
			"redis://h:26379?master_name=main&sentinel_password=xxxxx", []string{"Zq9sent"}},
		{"any case, repeated", "redis://h:1?Password=Zq9a&password=Wx7b&password=Vy5c",
			"redis://h:1?Password=xxxxx&password=xxxxx&password=xxxxx", []string{"Zq9a", "Wx7b", "Vy5c"}},
		{"@ in a password parameter", "redis://h:1?master_name=m&password=Zq9@sec", "redis://h:1?master_name=m&password=xxxxx", []string{"Zq9", "sec"}},
		{"token and auth", "redis://h:1?auth=Zq9a&token=Wx7b", "redis://h:1?auth=xxxxx&token=xxxxx", []string{"Zq9a", "Wx7b"}},
		{"unix socket", "unix://u:Zq9sec@/run/redis.sock?db=2", "unix://u:xxxxx@/run/redis.sock?db=2", []string{"Zq9sec"}},
		// A password with an unescaped '/', '?' or '#' cuts the userinfo short.
		{"slash in password", "redis://u:12/Zq9sec@h:6379", "(not shown: '@' or '#' after the host)", []string{"Zq9sec"}},
		{"question mark in password", "redis://u:12?Zq9sec@h", "(not shown: '@' or '#' after the host)", []string{"Zq9sec"}},
		{"question mark and = in password", "redis://u:12?Zq9=sec@h", "(not shown: '@' or '#' after the host)", []string{"Zq9", "sec"}},
		{"hash in password", "redis://u:12#Zq9sec@h", "(not shown: '@' or '#' after the host)", []string{"Zq9sec"}},
		{"unparseable", "redis://u:ab/Zq9sec@h:6379", "(not shown: not a valid URL)", []string{"ab/", "Zq9sec"}},
		{"bad escape", "redis://u:Zq9%zz@h", "(not shown: not a valid URL)", []string{"Zq9"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Redact(tc.url)
			if got != tc.want {
				t.Errorf("Redact(%q) = %q, want %q", tc.url, got, tc.want)
			}
			for _, s := range tc.secrets {
				if strings.Contains(got, s) {
					t.Errorf("Redact(%q) = %q shows %q", tc.url, got, s)
				}
			}
		})
	}
}

// NewClient's errors never hold a secret: url.Parse's error repeats the URL
// and quotes pieces of it, and a URL cut short by an unescaped character
// hands a password's tail to go-redis, which echoes it.
func TestNewClientErrorsHideSecrets(t *testing.T) {
	tests := []struct {
		name, url string
		secrets   []string // none may appear in the error
		want      string   // the error says this
	}{
		{"invalid port", "redis://u:ab/Zq9sec@h:6379", []string{"ab/", "Zq9sec", ":ab"}, "invalid port"},
		{"bad escape", "redis://u:Zq9%zz@h:6379", []string{"Zq9", "%zz"}, "invalid URL escape"},
		{"slash after digits", "redis://u:12/Zq9sec@h:6379", []string{"Zq9sec", "12/"}, "percent-encode"},
		{"question mark", "redis://u:12?Zq9=sec@h:6379", []string{"Zq9", "sec@"}, "percent-encode"},
		{"hash", "redis://u:12#Zq9sec@h:6379", []string{"Zq9sec"}, "percent-encode"},
		{"sentinel_password is not an option", "redis://h:26379?master_name=m&sentinel_password=Zq9sec", []string{"Zq9sec"}, "sentinel_password"},
		{"bad option beside a password", "redis://u:Zq9sec@h:6379?password=Wx7mast&master_name=m&dial_timeout=soon", []string{"Zq9sec", "Wx7mast"}, "dial_timeout"},
		{"bad database", "redis://u:Zq9sec@h:6379/x", []string{"Zq9sec"}, "database"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := NewClient(tc.url)
			if err == nil {
				c.Close()
				t.Fatalf("NewClient(%q): no error", tc.url)
			}
			msg := err.Error()
			for _, s := range tc.secrets {
				if strings.Contains(msg, s) {
					t.Errorf("NewClient(%q): error %q shows %q", tc.url, msg, s)
				}
			}
			if !strings.Contains(msg, tc.want) {
				t.Errorf("NewClient(%q): error %q, want it to say %q", tc.url, msg, tc.want)
			}
		})
	}
}

// Escaped secrets, secret parameters and '@' inside them still make a client.
func TestNewClientAcceptsSecrets(t *testing.T) {
	for _, u := range []string{
		"redis://u:a%2Fb%3Fc%23d%40e%25f@127.0.0.1:6379/0",
		"redis://sent:s@127.0.0.1:26379?master_name=main&password=p@ss",
		"unix://u:p@/run/redis%40main.sock?db=1",
	} {
		c, err := NewClient(u)
		if err != nil {
			t.Errorf("NewClient(%q): %v", u, err)
			continue
		}
		c.Close()
	}
}
