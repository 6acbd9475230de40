package main

import (
	"os/exec"
	"strings"
	"testing"
)

// The import rules of docs/architecture.md, checked from go list: data flows
// down (listeners → engine → decide), nothing climbs, and each layer stays
// out of the others' dependencies.
func TestImportRules(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}} {{join .Imports " "}}`, "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	const mod = "github.com/doorman/doorman/"
	imports := map[string][]string{}
	for line := range strings.SplitSeq(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		imports[strings.TrimPrefix(f[0], mod)] = f[1:]
	}
	rules := []struct {
		pkg       string
		forbidden []string // import paths, or prefixes ending in /
	}{
		{"decide", []string{"net/http", "github.com/valyala/fasthttp", "os", "go.etcd.io/bbolt", "github.com/redis/",
			"log", "log/slog", "github.com/VictoriaMetrics/", mod + "internal/"}},
		{"internal/cluster", []string{mod + "internal/server", "net/http", "github.com/valyala/fasthttp"}},
		{"internal/store", []string{"net/http", "github.com/valyala/fasthttp", mod + "internal/server", mod + "internal/cluster"}},
		{"internal/server", []string{mod + "internal/store", "go.etcd.io/bbolt", mod + "internal/cluster", "github.com/redis/"}},
		{"internal/config", []string{mod + "internal/server", mod + "internal/store", mod + "internal/engine",
			mod + "internal/cluster", "github.com/redis/", "go.etcd.io/bbolt"}},
		{"internal/engine", []string{mod + "internal/server", mod + "internal/cluster", "github.com/valyala/fasthttp",
			"net/http", "github.com/redis/", mod + "internal/ui", mod + "internal/notify", mod + "internal/nginxcache"}},
		// The status page is a listener: it reaches state through the engine only.
		{"internal/ui", []string{mod + "internal/store", "go.etcd.io/bbolt", mod + "internal/cluster", "github.com/redis/",
			mod + "internal/server"}},
		// Observers of the engine's events: they may not reach under it.
		{"internal/notify", []string{mod + "internal/store", "go.etcd.io/bbolt", mod + "internal/cluster", mod + "internal/server", "github.com/valyala/fasthttp"}},
		{"internal/nginxcache", []string{mod + "internal/store", "go.etcd.io/bbolt", mod + "internal/cluster", mod + "internal/server", "github.com/redis/"}},
		// The gate's service: below the listeners, beside the engine (go-webauthn brings net/http with it).
		{"internal/gate", []string{mod + "internal/server", mod + "internal/cluster", "github.com/valyala/fasthttp",
			"github.com/redis/", mod + "internal/ui"}},
		{"internal/minutes", []string{mod}},
		{"internal/throttle", []string{mod}},
	}
	for _, r := range rules {
		got, ok := imports[r.pkg]
		if !ok {
			t.Errorf("package %s not found", r.pkg)
			continue
		}
		for _, imp := range got {
			for _, bad := range r.forbidden {
				if imp == bad || strings.HasSuffix(bad, "/") && strings.HasPrefix(imp, bad) {
					t.Errorf("%s imports %s", r.pkg, imp)
				}
			}
		}
	}
}
