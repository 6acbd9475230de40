package config

import (
	"strings"
	"testing"
)

func TestGateConfig(t *testing.T) {
	cases := []struct {
		name    string
		env     map[string]string
		wantErr string // a substring; "" for no error
		on      bool
	}{
		{"off by default", nil, "", false},
		{"one origin", map[string]string{"DOORMAN_GATE_ORIGINS": "https://admin.example.com"}, "", true},
		{"localhost over http", map[string]string{"DOORMAN_GATE_ORIGINS": "http://localhost:8080"}, "", true},
		{"sub-origin", map[string]string{"DOORMAN_GATE_ORIGINS": "https://example.com, https://admin.example.com"}, "", true},
		{"listener off", map[string]string{"DOORMAN_GATE_ORIGINS": "https://example.com", "DOORMAN_GATE_ADDR": ""}, "", false},
		{"plain http", map[string]string{"DOORMAN_GATE_ORIGINS": "http://admin.example.com"}, `DOORMAN_GATE_ORIGINS: "http://admin.example.com" must be https://`, false},
		{"a path", map[string]string{"DOORMAN_GATE_ORIGINS": "https://example.com/admin"}, `DOORMAN_GATE_ORIGINS: "https://example.com/admin" is not an origin`, false},
		{"another site", map[string]string{"DOORMAN_GATE_ORIGINS": "https://example.com,https://example.org"}, `"https://example.org" is not example.com or under it`, false},
		{"short key", map[string]string{"DOORMAN_GATE_KEY": "short"}, `DOORMAN_GATE_KEY: "(hidden)" must be at least 32 bytes`, false},
		{"short session", map[string]string{"DOORMAN_GATE_SESSION_TTL": "10s"}, `DOORMAN_GATE_SESSION_TTL: "10s"`, false},
		{"bad listener", map[string]string{"DOORMAN_GATE_ADDR": "nope"}, `DOORMAN_GATE_ADDR: "nope"`, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Load(lookupFrom(tc.env))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := c.GateOn(); got != tc.on {
				t.Errorf("GateOn = %v, want %v", got, tc.on)
			}
		})
	}
}
