package modcheck

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// terraformDir is terraform/ in the repository.
const terraformDir = "../../.."

// reporter is where checks report problems: *testing.T, or a collector in
// the test of the checks themselves.
type reporter interface {
	Errorf(format string, args ...any)
}

// module is what the check learns from one directory of .tf files.
type module struct {
	dir       string
	variables map[string]*hclsyntax.Block
	outputs   map[string]*hclsyntax.Block
	locals    map[string]bool
	modules   map[string]*hclsyntax.Block
	resources map[string]bool // "type.name"
	data      map[string]bool // "type.name"
	refs      []ref
	templates []templateCall
}

type ref struct {
	t   hcl.Traversal
	rng hcl.Range
}

type templateCall struct {
	call *hclsyntax.FunctionCallExpr
}

// modulesUnderTest lists every directory holding .tf files.
func modulesUnderTest(t *testing.T) []string {
	t.Helper()
	var dirs []string
	err := filepath.WalkDir(terraformDir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".terraform" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(p, ".tf") {
			dir := filepath.Dir(p)
			if !slices.Contains(dirs, dir) {
				dirs = append(dirs, dir)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(dirs)
	for _, want := range []string{"modules/varve-bucket", "modules/etcd", "modules/varve", "examples/aws", "provider/examples/basic"} {
		if !slices.Contains(dirs, filepath.Join(terraformDir, want)) {
			t.Fatalf("expected Terraform configuration in terraform/%s; found %v", want, dirs)
		}
	}
	return dirs
}

func load(t *testing.T, dir string) *module {
	t.Helper()
	m := &module{dir: dir, variables: map[string]*hclsyntax.Block{}, outputs: map[string]*hclsyntax.Block{},
		locals: map[string]bool{}, modules: map[string]*hclsyntax.Block{}, resources: map[string]bool{}, data: map[string]bool{}}
	files, _ := filepath.Glob(filepath.Join(dir, "*.tf"))
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		file, diags := hclsyntax.ParseConfig(src, f, hcl.Pos{Line: 1, Column: 1})
		if diags.HasErrors() {
			t.Errorf("%s does not parse: %s", f, diags.Error())
			continue
		}
		body := file.Body.(*hclsyntax.Body)
		for _, b := range body.Blocks {
			switch b.Type {
			case "variable":
				m.variables[b.Labels[0]] = b
			case "output":
				m.outputs[b.Labels[0]] = b
			case "locals":
				for name := range b.Body.Attributes {
					m.locals[name] = true
				}
			case "module":
				m.modules[b.Labels[0]] = b
			case "resource":
				m.resources[b.Labels[0]+"."+b.Labels[1]] = true
			case "data":
				m.data[b.Labels[0]+"."+b.Labels[1]] = true
			}
		}
		m.walk(body, "", map[string]bool{})
	}
	return m
}

// walk collects references and templatefile calls; scope holds the names
// dynamic blocks bind (their iterators).
func (m *module) walk(body *hclsyntax.Body, blockType string, scope map[string]bool) {
	for _, a := range body.Attributes {
		// Type constraints and ignore_changes hold keywords and attribute
		// names, not references.
		if (blockType == "variable" && a.Name == "type") || (blockType == "lifecycle" && a.Name == "ignore_changes") {
			continue
		}
		for _, tr := range a.Expr.Variables() {
			if !scope[tr.RootName()] {
				m.refs = append(m.refs, ref{tr, tr.SourceRange()})
			}
		}
		_ = hclsyntax.VisitAll(a.Expr, func(n hclsyntax.Node) hcl.Diagnostics {
			if c, ok := n.(*hclsyntax.FunctionCallExpr); ok && c.Name == "templatefile" {
				m.templates = append(m.templates, templateCall{c})
			}
			return nil
		})
	}
	for _, b := range body.Blocks {
		inner := scope
		if b.Type == "dynamic" {
			inner = map[string]bool{}
			for k := range scope {
				inner[k] = true
			}
			it := b.Labels[0]
			if a, ok := b.Body.Attributes["iterator"]; ok {
				it = hcl.ExprAsKeyword(a.Expr)
			}
			inner[it] = true
			if a, ok := b.Body.Attributes["for_each"]; ok { // for_each is evaluated outside the iterator's scope
				for _, tr := range a.Expr.Variables() {
					if !scope[tr.RootName()] {
						m.refs = append(m.refs, ref{tr, tr.SourceRange()})
					}
				}
			}
		}
		m.walk(b.Body, b.Type, inner)
	}
}

func stringAttr(b *hclsyntax.Block, name string) (string, bool) {
	a, ok := b.Body.Attributes[name]
	if !ok {
		return "", false
	}
	v, diags := a.Expr.Value(nil)
	if diags.HasErrors() || v.Type() != cty.String || v.IsNull() {
		return "", false
	}
	return v.AsString(), true
}

func rel(p string) string {
	r, err := filepath.Rel(terraformDir, p)
	if err != nil {
		return p
	}
	return "terraform/" + r
}

// TestModules checks every configuration under terraform/.
func TestModules(t *testing.T) {
	loaded := map[string]*module{}
	for _, dir := range modulesUnderTest(t) {
		loaded[filepath.Clean(dir)] = load(t, dir)
	}
	for dir, m := range loaded {
		t.Run(rel(dir), func(t *testing.T) { checkAll(t, m, loaded) })
	}
}

func checkAll(t reporter, m *module, loaded map[string]*module) {
	checkVariables(t, m)
	checkOutputs(t, m)
	checkReferences(t, m, loaded)
	checkTemplates(t, m)
	checkModuleCalls(t, m, loaded)
	if strings.Contains(filepath.ToSlash(m.dir), "/modules/") {
		checkReadme(t, m)
	}
}

func checkVariables(t reporter, m *module) {
	used := map[string]bool{}
	for _, r := range m.refs {
		if r.t.RootName() == "var" && len(r.t) > 1 {
			if a, ok := r.t[1].(hcl.TraverseAttr); ok {
				used[a.Name] = true
			}
		}
	}
	for name, b := range m.variables {
		if d, ok := stringAttr(b, "description"); !ok || strings.TrimSpace(d) == "" {
			// Heredoc descriptions are templates; accept any non-empty one.
			if a, has := b.Body.Attributes["description"]; !has || !nonEmptyTemplate(a.Expr) {
				t.Errorf("variable %q has no description", name)
			}
		}
		if _, ok := b.Body.Attributes["type"]; !ok {
			t.Errorf("variable %q has no type", name)
		}
		if !used[name] {
			t.Errorf("variable %q is declared but never used", name)
		}
		for _, v := range b.Body.Blocks {
			if v.Type != "validation" {
				continue
			}
			c, ok := v.Body.Attributes["condition"]
			if !ok {
				t.Errorf("variable %q: validation without condition", name)
				continue
			}
			if msg, ok := stringAttr(v, "error_message"); !ok || msg == "" {
				t.Errorf("variable %q: validation without error_message", name)
			}
			refsSelf := false
			for _, tr := range c.Expr.Variables() {
				if tr.RootName() == "var" && len(tr) > 1 {
					if a, ok := tr[1].(hcl.TraverseAttr); ok && a.Name == name {
						refsSelf = true
					}
				}
			}
			if !refsSelf {
				t.Errorf("variable %q: a validation condition does not refer to var.%s", name, name)
			}
		}
	}
}

func nonEmptyTemplate(e hclsyntax.Expression) bool {
	v, diags := e.Value(nil)
	return !diags.HasErrors() && v.Type() == cty.String && !v.IsNull() && strings.TrimSpace(v.AsString()) != ""
}

func checkOutputs(t reporter, m *module) {
	for name, b := range m.outputs {
		if d, ok := stringAttr(b, "description"); !ok || d == "" {
			t.Errorf("output %q has no description", name)
		}
		if _, ok := b.Body.Attributes["value"]; !ok {
			t.Errorf("output %q has no value", name)
		}
	}
}

// Roots an expression may start with besides resource types.
var builtinRoots = map[string]bool{"each": true, "count": true, "path": true, "self": true, "terraform": true}

func checkReferences(t reporter, m *module, loaded map[string]*module) {
	for _, r := range m.refs {
		root := r.t.RootName()
		name := func(i int) string {
			if len(r.t) <= i {
				return ""
			}
			if a, ok := r.t[i].(hcl.TraverseAttr); ok {
				return a.Name
			}
			return ""
		}
		at := fmt.Sprintf("%s:%d", rel(r.rng.Filename), r.rng.Start.Line)
		switch {
		case root == "var":
			if _, ok := m.variables[name(1)]; !ok {
				t.Errorf("%s: var.%s is not declared", at, name(1))
			}
		case root == "local":
			if !m.locals[name(1)] {
				t.Errorf("%s: local.%s is not declared", at, name(1))
			}
		case root == "module":
			mb, ok := m.modules[name(1)]
			if !ok {
				t.Errorf("%s: module.%s is not declared", at, name(1))
				continue
			}
			checkModuleOutput(t, at, mb, m.dir, name(2), loaded)
		case root == "data":
			if !m.data[name(1)+"."+name(2)] {
				t.Errorf("%s: data.%s.%s is not declared", at, name(1), name(2))
			}
		case builtinRoots[root]:
		default:
			if !m.resources[root+"."+name(1)] {
				t.Errorf("%s: %s.%s is not a declared resource (nor a known name)", at, root, name(1))
			}
		}
	}
}

// checkModuleOutput checks that module.X.OUTPUT exists in X's source.
func checkModuleOutput(t reporter, at string, mb *hclsyntax.Block, dir, output string, loaded map[string]*module) {
	src, ok := stringAttr(mb, "source")
	if !ok || !strings.HasPrefix(src, ".") || output == "" {
		return
	}
	target, ok := loaded[filepath.Clean(filepath.Join(dir, src))]
	if !ok {
		return // reported by checkModuleCalls
	}
	if _, ok := target.outputs[output]; !ok {
		t.Errorf("%s: module %q (%s) has no output %q", at, mb.Labels[0], src, output)
	}
}

var metaArgs = map[string]bool{"source": true, "version": true, "count": true, "for_each": true, "providers": true, "depends_on": true}

func checkModuleCalls(t reporter, m *module, loaded map[string]*module) {
	for name, b := range m.modules {
		src, ok := stringAttr(b, "source")
		if !ok {
			t.Errorf("module %q has no literal source", name)
			continue
		}
		if !strings.HasPrefix(src, ".") {
			continue // a registry module: not checked here
		}
		target, ok := loaded[filepath.Clean(filepath.Join(m.dir, src))]
		if !ok {
			t.Errorf("module %q: source %s is not a configuration under terraform/", name, src)
			continue
		}
		for arg := range b.Body.Attributes {
			if metaArgs[arg] {
				continue
			}
			if _, ok := target.variables[arg]; !ok {
				t.Errorf("module %q passes %q, which %s does not declare", name, arg, src)
			}
		}
		for v, vb := range target.variables {
			if _, hasDefault := vb.Body.Attributes["default"]; hasDefault {
				continue
			}
			if _, set := b.Body.Attributes[v]; !set {
				t.Errorf("module %q does not set %s's required variable %q", name, src, v)
			}
		}
	}
}

// checkTemplates: templatefile("${path.module}/X", { ... }) names an
// existing file and passes exactly the variables the template uses.
func checkTemplates(t reporter, m *module) {
	for _, c := range m.templates {
		at := fmt.Sprintf("%s:%d", rel(c.call.Range().Filename), c.call.Range().Start.Line)
		if len(c.call.Args) != 2 {
			t.Errorf("%s: templatefile needs two arguments", at)
			continue
		}
		tpl, ok := c.call.Args[0].(*hclsyntax.TemplateExpr)
		if !ok || len(tpl.Parts) != 2 {
			t.Errorf("%s: the template path should be \"${path.module}/FILE\"", at)
			continue
		}
		lit, ok := tpl.Parts[1].(*hclsyntax.LiteralValueExpr)
		if !ok {
			t.Errorf("%s: the template path should be \"${path.module}/FILE\"", at)
			continue
		}
		file := filepath.Join(m.dir, strings.TrimPrefix(lit.Val.AsString(), "/"))
		src, err := os.ReadFile(file)
		if err != nil {
			t.Errorf("%s: template: %v", at, err)
			continue
		}
		expr, diags := hclsyntax.ParseTemplate(src, file, hcl.Pos{Line: 1, Column: 1})
		if diags.HasErrors() {
			t.Errorf("%s does not parse as a template: %s", rel(file), diags.Error())
			continue
		}
		obj, ok := c.call.Args[1].(*hclsyntax.ObjectConsExpr)
		if !ok {
			t.Errorf("%s: pass the template's variables as an object literal", at)
			continue
		}
		passed := map[string]bool{}
		for _, it := range obj.Items {
			passed[hcl.ExprAsKeyword(it.KeyExpr)] = true
		}
		usedVars := map[string]bool{}
		for _, tr := range expr.Variables() {
			usedVars[tr.RootName()] = true
			if !passed[tr.RootName()] {
				t.Errorf("%s:%d uses %q, which %s does not pass", rel(file), tr.SourceRange().Start.Line, tr.RootName(), at)
			}
		}
		for k := range passed {
			if !usedVars[k] {
				t.Errorf("%s passes %q to %s, which does not use it", at, k, rel(file))
			}
		}
	}
}

var exampleRE = regexp.MustCompile(`(?s)module "[^"]+" \{.*?source\s*=`)

// checkReadme: a module's README documents every variable and output and
// shows an example call.
func checkReadme(t reporter, m *module) {
	b, err := os.ReadFile(filepath.Join(m.dir, "README.md"))
	if err != nil {
		t.Errorf("module has no README.md: %v", err)
		return
	}
	readme := string(b)
	for name := range m.variables {
		if !strings.Contains(readme, "`"+name+"`") {
			t.Errorf("README.md does not document variable `%s`", name)
		}
	}
	for name := range m.outputs {
		if !strings.Contains(readme, "`"+name+"`") {
			t.Errorf("README.md does not document output `%s`", name)
		}
	}
	if !exampleRE.MatchString(readme) {
		t.Errorf("README.md has no example (a module \"...\" { source = ... } block)")
	}
	if !strings.Contains(readme, "terraform validate") {
		t.Errorf("README.md should say how the module is (and is not) validated: mention terraform validate")
	}
}
