package test

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestFuzzTargets runs every fuzz target of the repository for a short
// while: `go test -run=^$ -fuzz=^FuzzX$ -fuzztime=B ./pkg`. B is 40000x
// (40,000 inputs, 2–15 s per target here); DOORMAN_FUZZTIME overrides it
// with a count ("1000000x") or a duration ("5m"). The default is a count
// because a duration in Go 1.26 can end a clean run with a spurious
// "context deadline exceeded" failure when the deadline races a busy worker
// (golang/go#75804, fixed in Go 1.27); a count has no deadline. A failure
// leaves the failing input in the package's testdata/fuzz/FuzzX/, as go test
// does.
func TestFuzzTargets(t *testing.T) {
	if testing.Short() {
		t.Skip("fuzzes every target")
	}
	root := repoRoot(t)
	targets := fuzzTargets(t, root)
	if len(targets) == 0 {
		t.Fatal("no fuzz targets found")
	}
	budget := "40000x"
	if v := os.Getenv("DOORMAN_FUZZTIME"); v != "" {
		if n, ok := strings.CutSuffix(v, "x"); ok {
			if c, err := strconv.Atoi(n); err != nil || c < 1 {
				t.Fatalf("DOORMAN_FUZZTIME=%q: want a count such as 1000000x or a duration such as 5m", v)
			}
		} else if _, err := time.ParseDuration(v); err != nil {
			t.Fatalf("DOORMAN_FUZZTIME=%q: want a count such as 1000000x or a duration such as 5m", v)
		}
		budget = v
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	for _, tg := range targets {
		t.Run(tg.pkg+"/"+tg.name, func(t *testing.T) {
			start := time.Now()
			cmd := exec.Command(goTool, "test", "-run=^$", "-fuzz=^"+tg.name+"$", "-fuzztime="+budget, "./"+tg.pkg)
			cmd.Dir = root
			out, err := cmd.CombinedOutput()
			execs := regexp.MustCompile(`execs: (\d+)`).FindAllSubmatch(out, -1)
			n := "?"
			if len(execs) > 0 {
				n = string(execs[len(execs)-1][1])
			}
			if err != nil {
				t.Fatalf("%s in ./%s: %v\n%s", tg.name, tg.pkg, err, tail(string(out), 60))
			}
			t.Logf("%s: %s execs in %v", tg.name, n, time.Since(start).Round(100*time.Millisecond))
		})
	}
}

type fuzzTarget struct{ pkg, name string }

var fuzzFunc = regexp.MustCompile(`(?m)^func (Fuzz\w+)\(\w+ \*testing\.F\)`)

// fuzzTargets finds every func FuzzX(f *testing.F) in the repository's test
// files, by package directory.
func fuzzTargets(t *testing.T, root string) []fuzzTarget {
	t.Helper()
	var out []fuzzTarget
	err := filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() {
			if n := e.Name(); path != root && (strings.HasPrefix(n, ".") || n == "testdata" || n == "examples") {
				return filepath.SkipDir
			}
			if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil && path != root {
				return filepath.SkipDir // another module
			}
			return nil
		}
		if !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		for _, m := range fuzzFunc.FindAllSubmatch(src, -1) {
			out = append(out, fuzzTarget{filepath.ToSlash(rel), string(m[1])})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func tail(s string, lines int) string {
	l := strings.Split(s, "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}
