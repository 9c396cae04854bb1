package deploycheck

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// iamActions maps S3 API operations to the IAM actions they need.
var iamActions = map[string][]string{
	"PutObject":               {"s3:PutObject"},
	"GetObject":               {"s3:GetObject"},
	"HeadObject":              {"s3:GetObject"},
	"ListObjectsV2":           {"s3:ListBucket"},
	"ListObjects":             {"s3:ListBucket"},
	"HeadBucket":              {"s3:ListBucket"},
	"DeleteObject":            {"s3:DeleteObject"},
	"DeleteObjects":           {"s3:DeleteObject"},
	"CopyObject":              {"s3:GetObject", "s3:PutObject"},
	"CreateMultipartUpload":   {"s3:PutObject"},
	"UploadPart":              {"s3:PutObject"},
	"CompleteMultipartUpload": {"s3:PutObject"},
	"AbortMultipartUpload":    {"s3:AbortMultipartUpload"},
	"ListMultipartUploads":    {"s3:ListBucketMultipartUploads"},
	"ListParts":               {"s3:ListMultipartUploadParts"},
	"GetObjectAttributes":     {"s3:GetObject", "s3:GetObjectAttributes"},
	"PutObjectTagging":        {"s3:PutObjectTagging"},
	"GetObjectTagging":        {"s3:GetObjectTagging"},
}

var paginatorRE = regexp.MustCompile(`^New(\w+)Paginator$`)

// s3Operations lists the S3 operations the object store code calls: methods
// called on an *s3.Client field (x.client.Op) and s3.NewOpPaginator.
func s3Operations(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(repoRoot, "tier", "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatalf("parse %s: %v", f, err)
		}
		s3Name := ""
		for _, imp := range file.Imports {
			if strings.Trim(imp.Path.Value, `"`) == "github.com/aws/aws-sdk-go-v2/service/s3" {
				s3Name = "s3"
				if imp.Name != nil {
					s3Name = imp.Name.Name
				}
			}
		}
		if s3Name == "" {
			continue
		}
		ast.Inspect(file, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			switch x := sel.X.(type) {
			case *ast.Ident: // s3.NewListObjectsV2Paginator(...)
				if m := paginatorRE.FindStringSubmatch(sel.Sel.Name); x.Name == s3Name && m != nil {
					seen[m[1]] = true
				}
			case *ast.SelectorExpr: // s.client.PutObject(...)
				if x.Sel.Name == "client" {
					seen[sel.Sel.Name] = true
				}
			}
			return true
		})
	}
	ops := make([]string, 0, len(seen))
	for op := range seen {
		ops = append(ops, op)
	}
	sort.Strings(ops)
	return ops
}

// policyActions returns the S3 actions granted by the bucket module's
// data "aws_iam_policy_document" "varve".
func policyActions(t *testing.T) []string {
	t.Helper()
	path := filepath.Join(repoRoot, "terraform", "modules", "varve-bucket", "main.tf")
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f, diags := hclsyntax.ParseConfig(src, path, hcl.Pos{Line: 1, Column: 1})
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	var actions []string
	for _, b := range f.Body.(*hclsyntax.Body).Blocks {
		if b.Type != "data" || b.Labels[0] != "aws_iam_policy_document" || b.Labels[1] != "varve" {
			continue
		}
		for _, st := range b.Body.Blocks {
			if st.Type != "statement" {
				continue
			}
			a, ok := st.Body.Attributes["actions"]
			if !ok {
				continue
			}
			v, diags := a.Expr.Value(nil)
			if diags.HasErrors() {
				t.Fatalf("%s: actions must be a literal list: %s", path, diags.Error())
			}
			for it := v.ElementIterator(); it.Next(); {
				_, e := it.Element()
				if s := e.AsString(); strings.HasPrefix(s, "s3:") {
					actions = append(actions, s)
				}
			}
		}
	}
	sort.Strings(actions)
	return slices.Compact(actions)
}

// TestBucketPolicyMatchesVarveS3Calls: the IAM policy grants exactly the S3
// actions the object store code needs, no more and no less.
func TestBucketPolicyMatchesVarveS3Calls(t *testing.T) {
	ops := s3Operations(t)
	for _, want := range []string{"PutObject", "GetObject", "HeadObject", "ListObjectsV2", "DeleteObject"} {
		if !slices.Contains(ops, want) {
			t.Fatalf("found S3 operations %v in tier/: expected %s among them (is the scan broken?)", ops, want)
		}
	}
	var need []string
	for _, op := range ops {
		acts, ok := iamActions[op]
		if !ok {
			t.Errorf("tier/ calls S3 %s, which this test does not map to IAM actions: add it here and to the bucket policy", op)
			continue
		}
		need = append(need, acts...)
	}
	sort.Strings(need)
	need = slices.Compact(need)
	granted := policyActions(t)
	if !slices.Equal(need, granted) {
		t.Errorf("the bucket policy grants %v; Varve's S3 calls %v need exactly %v", granted, ops, need)
	}
}
