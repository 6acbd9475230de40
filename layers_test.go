package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"go/types"
	"io/fs"
	"os/exec"
	"strconv"
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
		{"internal/lists", []string{mod + "internal/store", "go.etcd.io/bbolt", mod + "internal/cluster", mod + "internal/server",
			mod + "internal/engine", mod + "internal/ui", "github.com/redis/", "github.com/valyala/fasthttp"}},
		// What the API, the status page and the CLI share: no HTTP, disk,
		// Redis or service, so the CLI can use it alone.
		{"internal/api", []string{"net/http", "github.com/valyala/fasthttp", "os", "go.etcd.io/bbolt", "github.com/redis/",
			mod + "internal/"}},
		// The learning listener reaches state through the engine only; its
		// parser does no I/O.
		{"internal/learn", []string{mod + "internal/store", "go.etcd.io/bbolt", mod + "internal/cluster", mod + "internal/server",
			"github.com/redis/", "net/http", "github.com/valyala/fasthttp"}},
		{"internal/accesslog", []string{"net", "os", "net/http", "github.com/valyala/fasthttp", "log", "log/slog", mod + "internal/"}},
		{"internal/requestid", []string{mod}},
		// The kernel's table is a hook of the engine: bans (decide), changes
		// (engine) and netlink; nothing beside it.
		{"internal/kernel", []string{mod + "internal/store", "go.etcd.io/bbolt", mod + "internal/cluster",
			mod + "internal/server", "net/http", "github.com/valyala/fasthttp", "github.com/redis/", "os/exec"}},
		{"internal/minutes", []string{mod}},
		{"internal/throttle", []string{mod}},
		{"internal/sockfile", []string{mod}}, // a leaf: the listeners share it
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

// TestCLIImports: the client commands (cli.go) speak the API through
// internal/api's wire types and input rules, not the server's.
func TestCLIImports(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "cli.go", nil, parser.ImportsOnly)
	if err != nil {
		t.Fatal(err)
	}
	allowed := map[string]bool{"github.com/doorman/doorman/internal/api": true, "github.com/doorman/doorman/internal/config": true}
	for _, imp := range f.Imports {
		path, _ := strconv.Unquote(imp.Path.Value)
		if strings.Contains(path, ".") && !allowed[path] {
			t.Errorf("cli.go imports %s; the CLI may use only internal/api and internal/config", path)
		}
	}
}

// clusterSeam is every exported engine identifier internal/cluster may use:
// the backend seam. The Redis backend implements engine.Backend (fail, ban,
// unban, remove, succeed, failures, and the same for accounts), changes this
// doorman's memory (engine.Memory: decide's tables, and the fallback while
// Redis is unreachable), returns each change as an engine.Change for the
// Local to commit, and hands peers' changes to the one inlet, Local.Learn.
// Widening this list is a design decision: say why in docs/architecture.md.
var clusterSeam = []string{
	"Backend", "Change", "Receipt.Report", "AccountChange", "IP", "MaxManualBan", "ReportShared",
	"SourceCluster", "SourceFailures", "SourceManual",
	// this doorman: its memory, the inlet for peers' changes, its metrics
	"Local", "Local.Memory", "Local.Learn", "Local.Metrics", "Metrics.Set",
	"Memory", "Memory.Core", "Memory.Accounts",
	"Memory.Fail", "Memory.Ban", "Memory.Unban", "Memory.Remove", "Memory.Succeed", "Memory.Failures",
	"Memory.FailAccount", "Memory.SucceedAccount", "Memory.Unlock",
	// the device key, shared through Redis
	"Accounts", "Accounts.Enabled", "Accounts.Key", "Accounts.UseKey",
}

// TestClusterEngineSeam: internal/cluster uses only the engine names of
// clusterSeam, so the seam cannot silently widen again.
func TestClusterEngineSeam(t *testing.T) {
	fset := token.NewFileSet()
	pkgs, err := parser.ParseDir(fset, "internal/cluster", func(fi fs.FileInfo) bool {
		return !strings.HasSuffix(fi.Name(), "_test.go")
	}, 0)
	if err != nil {
		t.Fatal(err)
	}
	var files []*ast.File
	for _, p := range pkgs {
		for _, f := range p.Files {
			files = append(files, f)
		}
	}
	info := &types.Info{Uses: map[*ast.Ident]types.Object{}, Selections: map[*ast.SelectorExpr]*types.Selection{}}
	// doorman's packages are type-checked from source; the others are
	// empty stand-ins (what they declare does not matter here), so the
	// check takes a second, and the errors they cause are ignored.
	conf := types.Config{Importer: &sourceImporter{fset: fset, pkgs: map[string]*types.Package{}}, Error: func(error) {}}
	conf.Check("github.com/doorman/doorman/internal/cluster", fset, files, info)
	const engine = "github.com/doorman/doorman/internal/engine"
	allowed := map[string]bool{}
	for _, n := range clusterSeam {
		allowed[n] = true
	}
	used := map[string]bool{}
	for id, obj := range info.Uses {
		if obj.Pkg() != nil && obj.Pkg().Path() == engine && obj.Exported() && obj.Parent() == obj.Pkg().Scope() {
			used[id.Name] = true
		}
	}
	for _, sel := range info.Selections {
		obj := sel.Obj()
		if obj.Pkg() == nil || obj.Pkg().Path() != engine || !obj.Exported() || sel.Kind() == types.FieldVal {
			continue
		}
		recv := sel.Recv()
		if f, ok := obj.(*types.Func); ok { // a method: named by the type that declares it
			recv = f.Type().(*types.Signature).Recv().Type()
		}
		if p, ok := recv.(*types.Pointer); ok {
			recv = p.Elem()
		}
		if n, ok := recv.(*types.Named); ok && n.Obj().Pkg() != nil && n.Obj().Pkg().Path() == engine {
			used[n.Obj().Name()+"."+obj.Name()] = true
		}
	}
	for n := range used {
		if !allowed[n] {
			t.Errorf("internal/cluster uses engine.%s, which is not in the seam (clusterSeam)", n)
		}
	}
	for n := range allowed {
		if !used[n] {
			t.Errorf("clusterSeam lists engine.%s, which internal/cluster does not use: drop it", n)
		}
	}
}

// sourceImporter type-checks doorman's packages from source and stands in
// an empty package for every other import.
type sourceImporter struct {
	fset *token.FileSet
	pkgs map[string]*types.Package
}

func (im *sourceImporter) Import(path string) (*types.Package, error) {
	if p, ok := im.pkgs[path]; ok {
		return p, nil
	}
	const mod = "github.com/doorman/doorman/"
	rel, ok := strings.CutPrefix(path, mod)
	if !ok {
		name := path[strings.LastIndexByte(path, '/')+1:]
		if path == "github.com/redis/go-redis/v9" {
			name = "redis"
		}
		p := types.NewPackage(path, name)
		p.MarkComplete()
		im.pkgs[path] = p
		return p, nil
	}
	parsed, err := parser.ParseDir(im.fset, rel, func(fi fs.FileInfo) bool { return !strings.HasSuffix(fi.Name(), "_test.go") }, 0)
	if err != nil {
		return nil, err
	}
	var files []*ast.File
	for _, p := range parsed {
		for _, f := range p.Files {
			files = append(files, f)
		}
	}
	conf := types.Config{Importer: im, Error: func(error) {}}
	p, _ := conf.Check(path, im.fset, files, nil)
	im.pkgs[path] = p
	return p, nil
}
