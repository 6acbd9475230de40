package engine

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
)

// commit is the one write path: in the engine's own code, the state file's
// writers, the event emitter, the failure lines and the ban and lock
// counters are called from commit.go only (and the state file from the start's restore, which loads
// what is already there). A new mutation path cannot skip a step.
func TestCommitIsTheOnlyWriter(t *testing.T) {
	guarded := map[string]bool{
		"persist": true, "emit": true, "failLog": true, // the engine's writer, emitter and failure lines
		"Write": true, "Sync": true, "SyncLocks": true, "AddEvents": true, "Put": true, "Delete": true, // the state file
		"BansFailures": true, "BansManual": true, "BansRange": true, "Unbans": true, "locks": true, "unlocks": true, // counters
	}
	allowed := map[string]bool{ // file:function
		"books.go:persist":         true, // the transaction Commit runs
		"accounts.go:persist":      true, // used by restore
		"accounts.go:restore":      true,
		"restore.go:Restore":       true,
		"accounts.go:register":     true, // creates the counters
		"metrics.go:NewMetrics":    true,
		"accounts.go:newDeviceKey": true,
	}
	files, _ := filepath.Glob("*.go")
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || fn.Body == nil {
				continue
			}
			ast.Inspect(fn.Body, func(n ast.Node) bool {
				sel, ok := n.(*ast.SelectorExpr)
				if !ok || !guarded[sel.Sel.Name] {
					return true
				}
				if name == "commit.go" || allowed[name+":"+fn.Name.Name] {
					return true
				}
				t.Errorf("%s: %s uses %s outside Commit", fset.Position(sel.Pos()), fn.Name.Name, sel.Sel.Name)
				return true
			})
		}
	}
}
