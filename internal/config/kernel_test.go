package config

import (
	"slices"
	"strings"
	"testing"
)

func TestKernelVariables(t *testing.T) {
	cases := []struct {
		name  string
		env   map[string]string
		hooks []string
		ports []uint16
		err   string
	}{
		{"defaults", nil, []string{"input"}, []uint16{80, 443}, ""},
		{"containers", map[string]string{"DOORMAN_NFT_TABLE": "doorman", "DOORMAN_NFT_HOOKS": "input, forward"}, []string{"input", "forward"}, []uint16{80, 443}, ""},
		{"all ports", map[string]string{"DOORMAN_NFT_PORTS": "all"}, []string{"input"}, nil, ""},
		{"ports", map[string]string{"DOORMAN_NFT_PORTS": "8080, 8443,8080"}, []string{"input"}, []uint16{8080, 8443}, ""},
		{"bad table", map[string]string{"DOORMAN_NFT_TABLE": "my table"}, nil, nil, `DOORMAN_NFT_TABLE: "my table" is not a table name`},
		{"dry run", map[string]string{"DOORMAN_NFT_TABLE": "doorman", "DOORMAN_DRY_RUN": "true"}, nil, nil, `DOORMAN_NFT_TABLE: "doorman" must be empty with DOORMAN_DRY_RUN=true`},
		{"bad hook", map[string]string{"DOORMAN_NFT_HOOKS": "output"}, nil, nil, `DOORMAN_NFT_HOOKS: "output" must be input, forward or input,forward`},
		{"port 0", map[string]string{"DOORMAN_NFT_PORTS": "0"}, nil, nil, `DOORMAN_NFT_PORTS: "0" must be ports`},
		{"port too big", map[string]string{"DOORMAN_NFT_PORTS": "80,70000"}, nil, nil, `DOORMAN_NFT_PORTS: "80,70000"`},
		{"min count 0", map[string]string{"DOORMAN_NFT_MIN_COUNT": "0"}, nil, nil, `DOORMAN_NFT_MIN_COUNT: "0" must be from 1 to 1000`},
		{"check too short", map[string]string{"DOORMAN_NFT_CHECK": "100ms"}, nil, nil, `DOORMAN_NFT_CHECK: "100ms" must be from 1s to 1h`},
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
			if !slices.Equal(c.NFTHookList, tc.hooks) || !slices.Equal(c.NFTPortList, tc.ports) {
				t.Errorf("hooks %q, ports %v; want %q, %v", c.NFTHookList, c.NFTPortList, tc.hooks, tc.ports)
			}
		})
	}
}
