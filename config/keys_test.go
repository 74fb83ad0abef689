package config

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The README's config reference is a Markdown table with a row per key:
//
//	| `path` | default | meaning |
//
// The default is the declared one in backticks, or what leaving the key out
// means; a "|" inside a cell is written "\|".

// row renders k as its README row.
func (k key) row() string {
	def := k.unset
	if k.def != "" {
		def = "`" + k.def + "`"
	}
	esc := func(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
	return fmt.Sprintf("| `%s` | %s | %s |", esc(k.path), esc(def), esc(k.doc))
}

// reference renders the README's config reference table from keys.
func reference() string {
	var b strings.Builder
	b.WriteString("| key | default | meaning |\n| --- | --- | --- |\n")
	for _, k := range keys {
		b.WriteString(k.row() + "\n")
	}
	return b.String()
}

// cells splits a Markdown table row into its trimmed cells, "\|" read as "|".
func cells(line string) []string {
	line = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(line), "|"), "|")
	var out []string
	var cell strings.Builder
	for i := 0; i < len(line); i++ {
		switch {
		case line[i] == '\\' && i+1 < len(line) && line[i+1] == '|':
			cell.WriteByte('|')
			i++
		case line[i] == '|':
			out = append(out, strings.TrimSpace(cell.String()))
			cell.Reset()
		default:
			cell.WriteByte(line[i])
		}
	}
	return append(out, strings.TrimSpace(cell.String()))
}

// normal collapses runs of white space, for comparing cells.
func normal(s string) string { return strings.Join(strings.Fields(s), " ") }

// readmeRows reads the table under "## Config reference" in README.md: the
// first table in that section, its rows in order.
func readmeRows(t *testing.T) [][]string {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rows [][]string
	in, table := false, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "## "):
			in = line == "## Config reference"
		case in && strings.HasPrefix(line, "|"):
			table = true
			c := cells(line)
			if c[0] == "key" || strings.Trim(c[0], "-: ") == "" {
				continue // header and delimiter rows
			}
			rows = append(rows, c)
		case in && table:
			in = false // the table ended
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(rows) == 0 {
		t.Fatal(`README.md has no table under "## Config reference"`)
	}
	return rows
}

// TestREADMEConfigReference holds README.md's config reference to keys: a
// row for every declared key and for nothing else, with the declared
// default and meaning.
func TestREADMEConfigReference(t *testing.T) {
	declared := map[string]key{}
	for _, k := range keys {
		declared[k.path] = k
	}
	seen := map[string]bool{}
	for _, r := range readmeRows(t) {
		if len(r) != 3 {
			t.Errorf("README.md: row %q has %d cells, want 3: key, default, meaning", strings.Join(r, " | "), len(r))
			continue
		}
		path := strings.Trim(r[0], "`")
		k, ok := declared[path]
		switch {
		case !ok:
			t.Errorf("README.md names key %q, which config/keys.go does not declare", path)
			continue
		case seen[path]:
			t.Errorf("README.md has two rows for key %q", path)
			continue
		}
		seen[path] = true
		want := cells(k.row())
		if normal(r[1]) != normal(want[1]) {
			t.Errorf("README.md: key %q has default %q; config/keys.go declares %q", path, r[1], want[1])
		}
		if normal(r[2]) != normal(want[2]) {
			t.Errorf("README.md: key %q means %q; config/keys.go says %q", path, r[2], want[2])
		}
	}
	for _, k := range keys {
		if !seen[k.path] {
			t.Errorf("README.md has no row for key %q, declared in config/keys.go", k.path)
		}
	}
	if t.Failed() {
		t.Logf("the config reference table as config/keys.go declares it, to paste into README.md:\n%s", reference())
	}
}

// TestKeysWellFormed checks each declaration on its own.
func TestKeysWellFormed(t *testing.T) {
	paths := map[string]bool{}
	for _, k := range keys {
		if paths[k.path] {
			t.Errorf("%s: declared twice", k.path)
		}
		paths[k.path] = true
		if (k.def == "") == (k.unset == "") {
			t.Errorf("%s: declare either a default or what leaving it out means, not %q and %q", k.path, k.def, k.unset)
		}
		if k.doc == "" || strings.Contains(k.doc, "\n") {
			t.Errorf("%s: doc %q; want one line", k.path, k.doc)
		}
		for seg := range strings.SplitSeq(k.path, ".") {
			if names, ok := alternatives(seg); ok && k.def != "" {
				if n := len(strings.Split(k.def, ", ")); n != len(names) {
					t.Errorf("%s: %d defaults %q for %d names", k.path, n, k.def, len(names))
				}
			}
		}
		if _, ok := lookup(concrete(k.path)); !ok {
			t.Errorf("%s: lookup(%q) does not find it", k.path, concrete(k.path))
		}
	}
}

// concrete is path as the decoder names it: a stage by its name.
func concrete(path string) string {
	segs := strings.Split(path, ".")
	for i, s := range segs {
		if names, ok := alternatives(s); ok {
			segs[i] = names[0]
		}
	}
	return strings.Join(segs, ".")
}

// everyKey is a valid file that leaves out every key it can, so that the
// decoder reads each declared key and takes its default wherever there is
// one.
const everyKey = `
listen: { tls: { cert: cert.pem, key: key.pem } }
routes:
  - upstream: app
upstreams:
  app:
    health: { path: /healthz }
    endpoints: [{ address: "127.0.0.1:9001" }]
  backup:
    policy: fallback
    groups: [[{ address: "127.0.0.1:9002" }]]
`

// TestEveryKeyIsDecoded checks that the decoder reads every declared key,
// so that none is accepted and then ignored, and that every default
// passes the checks a value from the file would.
func TestEveryKeyIsDecoded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "spooky.yaml")
	if err := os.WriteFile(path, []byte(everyKey), 0o600); err != nil {
		t.Fatal(err)
	}
	raw, err := document(path)
	if err != nil {
		t.Fatal(err)
	}
	d := &decoder{}
	d.config(raw)
	// The certificate files do not exist: the one problem expected.
	var problems []string
	for _, err := range d.errs {
		if e, ok := err.(*Error); !ok || e.Key != "listen.tls.cert" {
			problems = append(problems, err.Error())
		}
	}
	if len(problems) > 0 {
		t.Errorf("a file of defaults has problems:\n%s", strings.Join(problems, "\n"))
	}
	for _, k := range keys {
		used := slices.ContainsFunc(
			[]string{k.path, concrete(k.path)},
			func(p string) bool { return d.used[p] })
		if !used {
			t.Errorf("%s is declared but the decoder never reads it", k.path)
		}
	}
}

func TestLookup(t *testing.T) {
	tests := []struct {
		path string
		want any // nil: declared without a default
		ok   bool
	}{
		{"listen.admission_wait", "100ms", true},
		{"stages.router.workers", "2", true},
		{"stages.pool.workers", "1024", true},
		{"stages.telemetry.queue", "4096", true},
		{"stages.cache.workers", nil, false},
		{"upstreams.<name>.health.interval", "5s", true},
		{"upstreams.app.health.interval", nil, false},
		{"routes[].retries.on", []any{"connect-failure", "refused-stream"}, true},
		{"routes[].upstream", nil, true},
		{"trusted_proxies", []any(nil), true},
		{"listen", nil, false},
		{"listen.address.port", nil, false},
	}
	for _, tt := range tests {
		got, ok := lookup(tt.path)
		if ok != tt.ok || fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("lookup(%q) = %v, %v; want %v, %v", tt.path, got, ok, tt.want, tt.ok)
		}
	}
}

func TestChildren(t *testing.T) {
	tests := []struct {
		path string
		want []string
	}{
		{"", []string{"listen", "trusted_proxies", "admin", "log", "stages", "routes", "upstreams"}},
		{"listen", []string{"address", "tls", "admission_wait", "drain_timeout", "limits", "quic", "write_idle_timeout", "tcp", "alt_svc"}},
		{"stages", []string{"router", "balancer", "pool", "telemetry"}},
		{"stages.pool", []string{"workers", "queue"}},
		{"routes[]", []string{"name", "match", "upstream", "timeout", "retries"}},
		{"upstreams.<name>.endpoints[]", []string{"address", "weight"}},
		{"log.level", nil},
	}
	for _, tt := range tests {
		if got := children(tt.path); !slices.Equal(got, tt.want) {
			t.Errorf("children(%q) = %q, want %q", tt.path, got, tt.want)
		}
	}
}
