package keys

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestLayoutSpelledOnce checks that no production file of the module but
// this package's keys.go spells the root or a key family: every other
// package builds keys through these functions, so the layout has one owner.
func TestLayoutSpelledOnce(t *testing.T) {
	families := []string{Root, "topics/", "partitions/", "index/", "guards/", "nodes/",
		"idem/", "groups/", "compaction/", "claims/", "elections/", "seq/", "access/"}
	const owner = "metadata/internal/keys/keys.go"
	moduleRoot := filepath.Join("..", "..", "..")
	seen := map[string][]string{} // family → files spelling it
	err := filepath.WalkDir(moduleRoot, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(moduleRoot, path)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if rel == "gen" || rel == "node_modules" || (rel != "." && strings.HasPrefix(d.Name(), ".")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(rel, ".go") || strings.HasSuffix(rel, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		f.Imports = nil
		for _, decl := range f.Decls {
			if gd, ok := decl.(*ast.GenDecl); ok && gd.Tok == token.IMPORT {
				continue
			}
			ast.Inspect(decl, func(n ast.Node) bool {
				lit, ok := n.(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					return true
				}
				v, err := strconv.Unquote(lit.Value)
				if err != nil {
					return true
				}
				for _, fam := range families {
					spelled := strings.Contains(v, fam)
					if fam == Root { // not a Go import path or meter name
						spelled = strings.HasPrefix(v, Root)
					}
					if spelled && !slices.Contains(seen[fam], rel) {
						seen[fam] = append(seen[fam], rel)
					}
				}
				return true
			})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, fam := range families {
		files := seen[fam]
		if len(files) != 1 || files[0] != owner {
			t.Errorf("key family %q is spelled in %v, want only %s", fam, files, owner)
		}
	}
}
