package deploycheck

import (
	"debug/elf"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

const repoRoot = "../../../.."

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd  string // upper case
	args string
	line int
}

func parseDockerfile(t *testing.T) []instruction {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatalf("read Dockerfile: %v", err)
	}
	var out []instruction
	var cur strings.Builder
	start := 0
	for i, line := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(line)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur.WriteString(strings.TrimSuffix(trimmed, "\\") + " ")
			continue
		}
		cur.WriteString(trimmed)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, instruction{strings.ToUpper(cmd), strings.TrimSpace(args), start})
		cur.Reset()
	}
	return out
}

// TestDockerfileShape: multi-stage, a static build, a distroless or
// scratch final stage running as non-root, an entrypoint.
func TestDockerfileShape(t *testing.T) {
	ins := parseDockerfile(t)
	var froms []instruction
	for _, in := range ins {
		if in.cmd == "FROM" {
			froms = append(froms, in)
		}
	}
	if len(froms) < 2 {
		t.Fatalf("want a multi-stage build (2+ FROM), got %d", len(froms))
	}
	final := froms[len(froms)-1]
	if !strings.HasPrefix(final.args, "gcr.io/distroless/static") && final.args != "scratch" {
		t.Errorf("final stage FROM %q: want gcr.io/distroless/static* or scratch", final.args)
	}
	var user, entry string
	afterFinal := false
	for _, in := range ins {
		if in == final {
			afterFinal = true
		}
		if !afterFinal {
			continue
		}
		switch in.cmd {
		case "USER":
			user = in.args
		case "ENTRYPOINT":
			entry = in.args
		}
	}
	if user == "" || user == "root" || user == "0" || strings.HasPrefix(user, "0:") || strings.HasPrefix(user, "root:") {
		t.Errorf("final stage USER %q: want a non-root user", user)
	}
	if entry == "" {
		t.Error("final stage has no ENTRYPOINT")
	}
	if _, err := buildCommand(ins); err != nil {
		t.Error(err)
	}
}

// buildCommand returns the shell command of the RUN that builds the binary,
// without its --mount options.
func buildCommand(ins []instruction) (string, error) {
	for _, in := range ins {
		if in.cmd == "RUN" && strings.Contains(in.args, "go build") {
			args := in.args
			for strings.HasPrefix(args, "--") {
				_, args, _ = strings.Cut(args, " ")
				args = strings.TrimSpace(args)
			}
			if !strings.Contains(args, "CGO_ENABLED=0") {
				return "", fmt.Errorf("Dockerfile:%d: the go build does not set CGO_ENABLED=0 (a static binary)", in.line)
			}
			return args, nil
		}
	}
	return "", fmt.Errorf("Dockerfile has no RUN ... go build")
}

// TestDockerBuildStage assembles the build context as Docker would (through
// .dockerignore), runs the Dockerfile's own go build command in it, and
// checks that the result is a static executable that runs.
func TestDockerBuildStage(t *testing.T) {
	ins := parseDockerfile(t)
	run, err := buildCommand(ins)
	if err != nil {
		t.Fatal(err)
	}
	ctxDir := filepath.Join(t.TempDir(), "src")
	copied := copyContext(t, ctxDir)
	for _, must := range []string{"go.mod", "go.sum", "cmd/varve/main.go"} {
		if !slices.Contains(copied, must) {
			t.Fatalf(".dockerignore leaves %s out of the build context", must)
		}
	}
	for _, p := range copied {
		for _, never := range []string{".git/", ".tools/", "terraform/", "node_modules/"} {
			if strings.HasPrefix(p, never) || strings.Contains(p, "/"+never) {
				t.Fatalf(".dockerignore lets %s into the build context", p)
			}
		}
	}
	out := filepath.Join(t.TempDir(), "out")
	run = strings.ReplaceAll(run, "/out/", out+"/")
	cmd := exec.Command("sh", "-c", run)
	cmd.Dir = ctxDir
	cmd.Env = append(os.Environ(), "TARGETOS=linux", "TARGETARCH=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the Dockerfile's build command failed in the .dockerignore'd context: %v\n%s\n%s", err, run, b)
	}
	bin := filepath.Join(out, "varve")
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatalf("open built binary: %v", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatal("the binary has a dynamic loader (PT_INTERP): not static, it would not run on distroless/static or scratch")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Fatalf("the binary needs shared libraries %v", libs)
	}
	if b, err := exec.Command(bin, "serve", "--help").CombinedOutput(); err != nil {
		t.Fatalf("built binary: serve --help: %v\n%s", err, b)
	}
}

// copyContext copies the repository into dst minus what .dockerignore
// excludes, and returns the copied paths (slash-separated, relative).
func copyContext(t *testing.T, dst string) []string {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot, ".dockerignore"))
	if err != nil {
		t.Fatalf(".dockerignore: %v", err)
	}
	patterns, err := ignorefile.ReadAll(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		t.Fatal(err)
	}
	var copied []string
	err = filepath.WalkDir(repoRoot, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(repoRoot, p)
		if rel == "." {
			return nil
		}
		rel = filepath.ToSlash(rel)
		skip, err := pm.MatchesOrParentMatches(rel)
		if err != nil {
			return err
		}
		if skip {
			if d.IsDir() && !pm.Exclusions() {
				return filepath.SkipDir
			}
			return nil
		}
		target := filepath.Join(dst, filepath.FromSlash(rel))
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		copied = append(copied, rel)
		return copyFile(p, target)
	})
	if err != nil {
		t.Fatal(err)
	}
	return copied
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

var varveEnvRE = regexp.MustCompile(`\bVARVE_[A-Z0-9_]+\b`)

// TestModuleSettingsAreVarveSettings: every VARVE_* name in the ECS module
// and the Dockerfile is a setting of `varve serve` (VARVE_A_B is --a-b) or
// a variable its help names (the secrets: VARVE_TLS_CERT_PEM, ...).
// Varve ignores unknown variables, so a typo would silently fall back to a
// default; this catches it.
func TestModuleSettingsAreVarveSettings(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "varve")
	build := exec.Command("go", "build", "-o", bin, "./cmd/varve")
	build.Dir = repoRoot
	build.Env = append(os.Environ(), "GOFLAGS=-buildvcs=false")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build varve: %v\n%s", err, b)
	}
	help, err := exec.Command(bin, "serve", "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("varve serve --help: %v\n%s", err, help)
	}
	flags := map[string]bool{}
	for _, m := range regexp.MustCompile(`--([a-z0-9-]+)`).FindAllStringSubmatch(string(help), -1) {
		flags[m[1]] = true
	}
	files, _ := filepath.Glob(filepath.Join(repoRoot, "terraform", "modules", "varve", "*.tf"))
	files = append(files, filepath.Join(repoRoot, "Dockerfile"))
	seen := map[string]bool{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range varveEnvRE.FindAllString(string(b), -1) {
			seen[name] = true
		}
	}
	if len(seen) < 8 {
		t.Fatalf("found only %d VARVE_* names in the module and Dockerfile: the scan is broken", len(seen))
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		flag := strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(n, "VARVE_")), "_", "-")
		// Secrets are variables only (never flags): serve --help names them.
		if !flags[flag] && !strings.Contains(string(help), n) {
			t.Errorf("%s is used by the deployment but `varve serve` has no --%s (nor does its help name the variable)", n, flag)
		}
	}
	// The roles the services run must be roles Varve knows (compaction is
	// off by default and documented as needing a later release).
	for _, role := range []string{"ingest", "fetch"} {
		if !strings.Contains(string(help), role) {
			t.Errorf("varve serve --help does not mention role %q", role)
		}
	}
}
