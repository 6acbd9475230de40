package config

import (
	"strings"
	"testing"
)

func TestLearnVariables(t *testing.T) {
	rules := "django /admin/login/"
	for _, tc := range []struct {
		name string
		env  map[string]string
		want string // error; empty: valid
	}{
		{"off", map[string]string{}, ""},
		{"unixgram", map[string]string{"DOORMAN_LEARN_ADDR": "unixgram:/run/doorman/learn.sock", "DOORMAN_LEARN_RULES": rules}, ""},
		{"udp v4", map[string]string{"DOORMAN_LEARN_ADDR": "udp:127.0.0.1:9183", "DOORMAN_LEARN_RULES": rules}, ""},
		{"udp v6", map[string]string{"DOORMAN_LEARN_ADDR": "udp:[::1]:9183", "DOORMAN_LEARN_RULES": rules}, ""},
		{"udp not loopback", map[string]string{"DOORMAN_LEARN_ADDR": "udp:0.0.0.0:9183", "DOORMAN_LEARN_RULES": rules},
			`DOORMAN_LEARN_ADDR: "udp:0.0.0.0:9183" must listen on a loopback address`},
		{"udp host name", map[string]string{"DOORMAN_LEARN_ADDR": "udp:localhost:9183", "DOORMAN_LEARN_RULES": rules},
			`DOORMAN_LEARN_ADDR: "udp:localhost:9183" must listen on a loopback address`},
		{"udp no port", map[string]string{"DOORMAN_LEARN_ADDR": "udp:127.0.0.1", "DOORMAN_LEARN_RULES": rules}, `DOORMAN_LEARN_ADDR: "udp:127.0.0.1" is not udp:HOST:PORT`},
		{"relative socket", map[string]string{"DOORMAN_LEARN_ADDR": "unixgram:learn.sock", "DOORMAN_LEARN_RULES": rules},
			`DOORMAN_LEARN_ADDR: "unixgram:learn.sock" is not unixgram:/absolute/path`},
		{"stream socket", map[string]string{"DOORMAN_LEARN_ADDR": "unix:/run/learn.sock", "DOORMAN_LEARN_RULES": rules},
			`DOORMAN_LEARN_ADDR: "unix:/run/learn.sock" is not unixgram:/path or udp:127.0.0.1:PORT`},
		{"rules without addr", map[string]string{"DOORMAN_LEARN_RULES": rules}, `DOORMAN_LEARN_RULES: "django /admin/login/" is set but DOORMAN_LEARN_ADDR is not`},
		{"addr without rules", map[string]string{"DOORMAN_LEARN_ADDR": "udp:127.0.0.1:9183"}, `DOORMAN_LEARN_ADDR: "udp:127.0.0.1:9183" is set but DOORMAN_LEARN_RULES`},
		{"unknown preset", map[string]string{"DOORMAN_LEARN_ADDR": "udp:127.0.0.1:9183", "DOORMAN_LEARN_RULES": "joomla /login"},
			`DOORMAN_LEARN_RULES: "joomla /login" is invalid: "joomla /login": unknown preset "joomla"`},
		{"relative path", map[string]string{"DOORMAN_LEARN_ADDR": "udp:127.0.0.1:9183", "DOORMAN_LEARN_RULES": "django admin/login"},
			`DOORMAN_LEARN_RULES: "django admin/login" is invalid`},
		{"duplicate", map[string]string{"DOORMAN_LEARN_ADDR": "udp:127.0.0.1:9183", "DOORMAN_LEARN_RULES": "django /a/; status /a/"},
			`DOORMAN_LEARN_RULES: "django /a/; status /a/" is invalid: "status /a/": /a/ given twice`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Load(lookupFrom(tc.env))
			if tc.want == "" {
				if err != nil {
					t.Fatalf("err = %v, want none", err)
				}
				if (c.LearnRuleSet != nil) != (tc.env["DOORMAN_LEARN_ADDR"] != "") {
					t.Errorf("LearnRuleSet = %v with DOORMAN_LEARN_ADDR %q", c.LearnRuleSet, tc.env["DOORMAN_LEARN_ADDR"])
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("err = %v\nwant prefix %s", err, tc.want)
			}
		})
	}
}
