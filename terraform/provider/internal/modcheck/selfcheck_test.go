package modcheck

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type collector struct{ msgs []string }

func (c *collector) Errorf(format string, args ...any) {
	c.msgs = append(c.msgs, fmt.Sprintf(format, args...))
}

// TestChecksCatchMistakes runs the checks on a configuration with one
// mistake of each kind, so a check that silently stops working fails here.
func TestChecksCatchMistakes(t *testing.T) {
	root := t.TempDir()
	files := map[string]string{
		"modules/m/main.tf": `
variable "undocumented" {
  type = string
}
variable "untyped" {
  description = "no type"
}
variable "unused" {
  description = "never referenced"
  type        = string
  default     = "x"
}
variable "required" {
  description = "no default"
  type        = number
  validation {
    condition     = length("x") > 0
    error_message = "a validation that ignores its variable"
  }
}
locals {
  a = "${var.undocumented}${var.untyped}${var.required}"
}
resource "null_resource" "r" {
  triggers = {
    x = local.missing
    y = var.undeclared
    z = aws_thing.nope.id
    t = templatefile("${path.module}/t.tftpl", { used = 1, extra = 2 })
  }
}
output "o" {
  value = local.a
}
`,
		"modules/m/t.tftpl":   "${used} ${absent}\n",
		"modules/m/README.md": "Only `undocumented` is mentioned.\n",
		"examples/e/main.tf": `
module "m" {
  source = "../../modules/m"
  bogus  = 1
}
output "p" {
  description = "missing output of the module"
  value       = module.m.nothing
}
`,
	}
	for name, text := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	loaded := map[string]*module{}
	for _, d := range []string{"modules/m", "examples/e"} {
		dir := filepath.Clean(filepath.Join(root, d))
		loaded[dir] = load(t, dir)
	}
	var c collector
	for _, m := range loaded {
		checkAll(&c, m, loaded)
	}
	all := strings.Join(c.msgs, "\n")
	for _, want := range []string{
		`variable "undocumented" has no description`,
		`variable "untyped" has no type`,
		`variable "unused" is declared but never used`,
		`variable "required": a validation condition does not refer to var.required`,
		`local.missing is not declared`,
		`var.undeclared is not declared`,
		`aws_thing.nope is not a declared resource`,
		`uses "absent"`,
		`passes "extra"`,
		`output "o" has no description`,
		"README.md does not document variable `untyped`",
		"README.md does not document output `o`",
		`README.md has no example`,
		`module "m" passes "bogus"`,
		`does not set ../../modules/m's required variable "required"`,
		`has no output "nothing"`,
	} {
		if !strings.Contains(all, want) {
			t.Errorf("the checks did not report %q; they reported:\n%s", want, all)
		}
	}
}
