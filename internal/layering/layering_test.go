package layering

import (
	"bufio"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path"
	"slices"
	"strings"
	"testing"
)

const module = "spooky"

// rules reads the "Layering" table of docs/ARCHITECTURE.md: each row names
// a package pattern (a path, or a path ending in /* for the packages right
// below it) and the spooky packages it may import, as the same kind of
// patterns, or "anything".
func rules(t *testing.T) map[string][]string {
	t.Helper()
	f, err := os.Open("../../docs/ARCHITECTURE.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rules := map[string][]string{}
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "## "):
			in = line == "## Layering"
		case in && strings.HasPrefix(line, "| `"):
			cells := strings.Split(strings.Trim(line, "|"), "|")
			if len(cells) < 2 {
				t.Fatalf("ARCHITECTURE.md: layering row %q has no second cell", line)
			}
			var may []string
			for _, p := range strings.Split(cells[1], ",") {
				if p = strings.Trim(strings.TrimSpace(p), "`"); p != "" && p != "nothing" {
					may = append(may, p)
				}
			}
			rules[strings.Trim(strings.TrimSpace(cells[0]), "`")] = may
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(rules) == 0 {
		t.Fatal(`ARCHITECTURE.md has no "## Layering" table`)
	}
	return rules
}

// matches reports whether the package path p (without the module prefix)
// fits pattern.
func matches(pattern, p string) bool {
	if dir, ok := strings.CutSuffix(pattern, "/*"); ok {
		return path.Dir(p) == dir
	}
	return pattern == p
}

type pkg struct {
	ImportPath   string
	Imports      []string
	TestImports  []string
	XTestImports []string
}

func TestImportsPointOneWay(t *testing.T) {
	rules := rules(t)
	cmd := exec.Command("go", "list", "-json", module+"/...")
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		self := strings.TrimPrefix(p.ImportPath, module+"/")
		may, found := rules[self]
		for pattern, m := range rules {
			if !found && matches(pattern, self) {
				may, found = m, true
			}
		}
		if !found {
			t.Errorf("%s: no row in ARCHITECTURE.md's layering table", self)
			continue
		}
		if slices.Contains(may, "anything") {
			continue
		}
		check := func(imports []string, test bool) {
			for _, imp := range imports {
				dep, ok := strings.CutPrefix(imp, module+"/")
				if !ok || dep == self {
					continue
				}
				allowed := slices.ContainsFunc(may, func(pattern string) bool { return matches(pattern, dep) })
				if test && dep == "internal/testkit" {
					allowed = true
				}
				if !allowed {
					t.Errorf("%s imports %s; ARCHITECTURE.md allows only %v", self, dep, may)
				}
			}
		}
		check(p.Imports, false)
		check(p.TestImports, true)
		check(p.XTestImports, true)
	}
}
