package core

// core is pure (doc.go, DESIGN.md): no I/O, no clock, no goroutines, no
// global randomness, and no dependency on the rest of the module. This test
// reads core's own source and holds it to that.

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const purityModule = "github.com/stepraft/stepraft"

// purityAllowed lists the standard packages core may import: computation
// only. Anything else (os, io/fs, net, time, syscall, os/exec, crypto/rand,
// math/rand, unsafe, runtime, ...) is refused.
var purityAllowed = map[string]bool{
	"bytes":           true,
	"encoding/binary": true,
	"errors":          true,
	"fmt":             true,
	"log/slog":        true,
	"maps":            true,
	"math":            true,
	"math/bits":       true,
	"math/rand/v2":    true,
	"slices":          true,
	"sort":            true,
	"strconv":         true,
	"strings":         true,
	"sync":            true,
	"unicode/utf8":    true,
}

// purityRandAllowed is what core may use of math/rand/v2: constructors of a
// seeded generator and its types, never the global generator (rand.IntN
// and friends draw from a random seed).
var purityRandAllowed = map[string]bool{
	"New": true, "NewPCG": true, "NewChaCha8": true,
	"Rand": true, "PCG": true, "ChaCha8": true, "Source": true,
}

// purityCheckFile returns what is impure in f, and the first-party packages
// it imports.
func purityCheckFile(fset *token.FileSet, f *ast.File) (bad, firstParty []string) {
	report := func(n ast.Node, format string, args ...any) {
		bad = append(bad, fmt.Sprintf("%s: %s", fset.Position(n.Pos()), fmt.Sprintf(format, args...)))
	}
	randName := ""
	for _, imp := range f.Imports {
		path, err := strconv.Unquote(imp.Path.Value)
		if err != nil {
			report(imp, "bad import %s", imp.Path.Value)
			continue
		}
		switch {
		case path == purityModule || strings.HasPrefix(path, purityModule+"/"):
			firstParty = append(firstParty, path)
			report(imp, "imports %q: core must import nothing of ours", path)
		case !purityAllowed[path]:
			report(imp, "imports %q, which is not on the list of pure packages", path)
		}
		if imp.Name != nil && imp.Name.Name == "." {
			report(imp, "dot import of %q", path)
		}
		if path == "math/rand/v2" {
			randName = "rand"
			if imp.Name != nil {
				randName = imp.Name.Name
			}
		}
	}
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.GoStmt:
			report(n, "go statement: core starts no goroutine")
		case *ast.SelectorExpr:
			x, ok := n.X.(*ast.Ident)
			if !ok || x.Obj != nil { // a local name, not a package
				return true
			}
			switch {
			case x.Name == "time":
				report(n, "time.%s: core reads no clock", n.Sel.Name)
			case randName != "" && x.Name == randName && !purityRandAllowed[n.Sel.Name]:
				report(n, "%s.%s: randomness must come from the seeded generator", x.Name, n.Sel.Name)
			}
		}
		return true
	})
	return bad, firstParty
}

// purityCheckDir checks the non-test Go files of the package in dir (all of
// them, whatever their build tags) and, through resolve, the first-party
// packages they import, transitively. It returns the violations and the
// number of files read.
func purityCheckDir(t *testing.T, dir string, resolve func(string) string, seen map[string]bool) (bad []string, files int) {
	t.Helper()
	if seen[dir] {
		return nil, 0
	}
	seen[dir] = true
	names, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range names {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		files++
		b, deps := purityCheckFile(fset, f)
		bad = append(bad, b...)
		for _, dep := range deps {
			if resolve == nil {
				continue
			}
			more, n := purityCheckDir(t, resolve(dep), resolve, seen)
			bad, files = append(bad, more...), files+n
		}
	}
	return bad, files
}

func TestCoreIsPure(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root not found above core: %v", err)
	}
	resolve := func(path string) string {
		return filepath.Join(root, filepath.FromSlash(strings.TrimPrefix(strings.TrimPrefix(path, purityModule), "/")))
	}
	bad, files := purityCheckDir(t, ".", resolve, map[string]bool{})
	if files < 10 {
		t.Fatalf("read only %d files of core; is the test running in core/?", files)
	}
	for _, b := range bad {
		t.Error(b)
	}
}

// The checker itself catches what it is meant to catch.
func TestPurityCheckerFlagsImpureCode(t *testing.T) {
	const impure = `package p

import (
	"os"
	"time"
	"unsafe"
	mrand "math/rand"
	"math/rand/v2"
	"github.com/stepraft/stepraft/wal"
)

func f() {}

func g() {
	go f()
	os.Open("x")
	_ = time.Now()
	_ = rand.IntN(3)
	_ = mrand.Int()
	_ = unsafe.Sizeof(0)
	_ = wal.Open
}
`
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "impure.go", impure, 0)
	if err != nil {
		t.Fatal(err)
	}
	bad, firstParty := purityCheckFile(fset, f)
	all := strings.Join(bad, "\n")
	for _, want := range []string{
		`imports "os"`, `imports "time"`, `imports "unsafe"`, `imports "math/rand",`,
		"must import nothing of ours", "go statement", "time.Now", "rand.IntN",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("checker missed %q; it reported:\n%s", want, all)
		}
	}
	if !slices.Equal(firstParty, []string{purityModule + "/wal"}) {
		t.Errorf("first-party imports %v", firstParty)
	}

	const pure = `package p

import "math/rand/v2"

type gen struct{ rng *rand.Rand }

func newGen(seed uint64) gen {
	var time int // a local named time is not the package
	_ = time
	return gen{rng: rand.New(rand.NewPCG(seed, 1))}
}

func (g gen) draw(n int) int { return g.rng.IntN(n) }
`
	f, err = parser.ParseFile(fset, "pure.go", pure, 0)
	if err != nil {
		t.Fatal(err)
	}
	if bad, _ := purityCheckFile(fset, f); len(bad) != 0 {
		t.Errorf("checker flagged pure code:\n%s", strings.Join(bad, "\n"))
	}
}
