// Command boundaries checks Varve's import boundaries, the ones doc.go files
// state and reviews keep, so that a change breaking one fails `make test`:
//
//   - only metadata (and packages under it) imports etcd in production code;
//   - tier/segment (and packages under it: kafkabatch, the Kafka batch
//     codec, and internal/wire, their shared helpers) depends on nothing but the standard library,
//     github.com/klauspost/compress and github.com/pierrec/lz4/v4 (it is the
//     format, fuzzed on its own; lz4 because block version 3 stores Kafka
//     record batches, which producers may compress with lz4's frame format,
//     the codec franz-go uses too — klauspost/compress has no lz4);
//   - sdk depends on no server package: only the generated API, the shared
//     partitioner, the shared error reasons, the Parquet writer, the segment
//     format (to encode and decode Kafka record batches) and itself;
//   - parquet depends on no package of the module: it turns any Arrow
//     record reader into Parquet, for the CLI and the SDK alike.
//
// It runs `go list -deps -json` over the module and prints one line per
// violation, exiting 1 if there is any. Run it as `go run ./internal/lint/boundaries`.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
)

const module = "github.com/varve-io/varve"

// Package is what the rules look at of one package, as `go list -json`
// gives it.
type Package struct {
	ImportPath string
	Standard   bool
	Imports    []string // direct, production code
	Deps       []string // transitive, production code
}

// Rule is one boundary: a name for the message and a check over every
// listed package.
type Rule struct {
	Name  string
	Check func(p Package, byPath map[string]Package) []string
}

func under(path, pkg string) bool { return path == pkg || strings.HasPrefix(path, pkg+"/") }

// Rules are Varve's boundaries.
var Rules = []Rule{
	{
		Name: "only metadata imports etcd",
		Check: func(p Package, _ map[string]Package) []string {
			if under(p.ImportPath, module+"/metadata") {
				return nil
			}
			var out []string
			for _, imp := range p.Imports {
				if under(imp, "go.etcd.io") {
					out = append(out, fmt.Sprintf("%s imports %s", p.ImportPath, imp))
				}
			}
			return out
		},
	},
	{
		Name: "tier/segment imports only the standard library, klauspost/compress and pierrec/lz4",
		Check: func(p Package, byPath map[string]Package) []string {
			if !under(p.ImportPath, module+"/tier/segment") {
				return nil
			}
			var out []string
			for _, d := range p.Deps {
				if byPath[d].Standard || under(d, module+"/tier/segment") || under(d, "github.com/klauspost/compress") || under(d, "github.com/pierrec/lz4/v4") {
					continue
				}
				out = append(out, fmt.Sprintf("%s depends on %s", p.ImportPath, d))
			}
			return out
		},
	},
	{
		Name: "sdk imports no server package",
		Check: func(p Package, _ map[string]Package) []string {
			if !under(p.ImportPath, module+"/sdk") {
				return nil
			}
			var out []string
			for _, d := range p.Deps {
				if !under(d, module) || under(d, module+"/gen") || under(d, module+"/sdk") || d == module+"/internal/murmur2" || d == module+"/internal/apierr" || d == module+"/internal/flushtick" || d == module+"/internal/placement" || d == module+"/parquet" || under(d, module+"/tier/segment") {
					continue
				}
				out = append(out, fmt.Sprintf("%s depends on %s", p.ImportPath, d))
			}
			return out
		},
	},
	{
		Name: "parquet imports no server package",
		Check: func(p Package, _ map[string]Package) []string {
			if !under(p.ImportPath, module+"/parquet") {
				return nil
			}
			var out []string
			for _, d := range p.Deps {
				if under(d, module) && !under(d, module+"/parquet") {
					out = append(out, fmt.Sprintf("%s depends on %s", p.ImportPath, d))
				}
			}
			return out
		},
	},
}

// Check applies every rule to pkgs and returns the violations.
func Check(pkgs []Package) []string {
	byPath := make(map[string]Package, len(pkgs))
	for _, p := range pkgs {
		byPath[p.ImportPath] = p
	}
	var out []string
	for _, r := range Rules {
		for _, p := range pkgs {
			if !under(p.ImportPath, module) {
				continue // dependencies are listed too (-deps); judge only ours
			}
			for _, v := range r.Check(p, byPath) {
				out = append(out, r.Name+": "+v)
			}
		}
	}
	return out
}

func list(patterns ...string) ([]Package, error) {
	cmd := exec.Command("go", append([]string{"list", "-deps", "-json=ImportPath,Standard,Imports,Deps"}, patterns...)...)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	var pkgs []Package
	dec := json.NewDecoder(stdout)
	for {
		var p Package
		err := dec.Decode(&p)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("decode go list output: %w", err)
		}
		pkgs = append(pkgs, p)
	}
	if err := cmd.Wait(); err != nil {
		return nil, fmt.Errorf("go list: %w", err)
	}
	return pkgs, nil
}

func main() {
	patterns := os.Args[1:]
	if len(patterns) == 0 {
		patterns = []string{"./..."}
	}
	pkgs, err := list(patterns...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "boundaries:", err)
		os.Exit(2)
	}
	v := Check(pkgs)
	for _, line := range v {
		fmt.Fprintln(os.Stderr, "boundary violated:", line)
	}
	if len(v) > 0 {
		os.Exit(1)
	}
	fmt.Printf("boundaries: %d packages checked, no violation\n", len(pkgs))
}
