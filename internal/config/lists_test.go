package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// An allow file that holds no entry is refused: an empty allow list allows
// everyone. An empty deny file is accepted.
func TestEmptyListFiles(t *testing.T) {
	tests := []struct {
		name    string
		env     string // the file's variable
		content string
		base    string // DOORMAN_ALLOW or DOORMAN_DENY
		wantErr bool
	}{
		{"allow: zero bytes", "DOORMAN_ALLOW_FILE", "", "", true},
		{"allow: blank lines", "DOORMAN_ALLOW_FILE", "\n  \n\t\n", "", true},
		{"allow: comments only", "DOORMAN_ALLOW_FILE", "# office\n# 198.51.100.0/24\n", "", true},
		{"allow: empty file, variable set", "DOORMAN_ALLOW_FILE", "", "10.0.0.0/8", true},
		{"allow: one entry", "DOORMAN_ALLOW_FILE", "# office\n198.51.100.0/24\n", "", false},
		{"deny: zero bytes", "DOORMAN_DENY_FILE", "", "", false},
		{"deny: comments only", "DOORMAN_DENY_FILE", "# nothing yet\n", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "list.txt")
			if err := os.WriteFile(path, []byte(tc.content), 0o644); err != nil {
				t.Fatal(err)
			}
			env := map[string]string{tc.env: path}
			if tc.base != "" {
				env[strings.TrimSuffix(tc.env, "_FILE")] = tc.base
			}
			c, err := Load(lookupFrom(env))
			if err != nil {
				t.Fatal(err)
			}
			l, err := c.Lists()
			if !tc.wantErr {
				if err != nil {
					t.Fatalf("Lists() = %v, want no error", err)
				}
				return
			}
			if err == nil {
				allow, _, _ := l.Sizes()
				t.Fatalf("Lists() took the file: %d allow entries, want an error", allow)
			}
			if got := err.Error(); !strings.HasPrefix(got, tc.env+": "+path+" has no entries") {
				t.Fatalf("err = %q, want it to name %s and %s", got, tc.env, path)
			}
		})
	}
}

func TestMissingListFileNamesVariable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "absent.txt")
	for _, v := range []string{"DOORMAN_ALLOW_FILE", "DOORMAN_DENY_FILE"} {
		c, err := Load(lookupFrom(map[string]string{v: path}))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Lists(); err == nil || !strings.HasPrefix(err.Error(), v+": ") || !strings.Contains(err.Error(), path) {
			t.Errorf("%s missing: err = %v, want it to name the variable and the file", v, err)
		}
	}
}
