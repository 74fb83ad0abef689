package config

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"
)

// decoder walks the raw document and collects every problem it meets, so
// that Load reports them all at once.
type decoder struct {
	errs []error
	// used holds the declared path of every key looked up, for the test
	// that keys declares nothing the decoder ignores.
	used map[string]bool
}

// decode turns the raw document into a Config, or into every problem found.
func decode(raw map[string]any) (*Config, error) {
	d := &decoder{}
	c := d.config(raw)
	if len(d.errs) > 0 {
		return nil, errors.Join(d.errs...)
	}
	return c, nil
}

func (d *decoder) fail(key string, value any, want string) {
	d.errs = append(d.errs, &Error{Key: key, Value: value, Want: want})
}

// node is one mapping of the document.
type node struct {
	key  string         // where it is, for errors: "upstreams.app.endpoints[0]"
	path string         // where keys declares it: "upstreams.<name>.endpoints[]"
	m    map[string]any // its entries; empty when the file leaves it out
	// wrong is set when the file has something other than a mapping here,
	// already reported: its keys need no further complaint.
	wrong bool
}

func join(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}

// object checks that v, found at key and declared at path, is a mapping
// that holds only the names keys declares under path.
func (d *decoder) object(key, path string, v any) node {
	n := node{key: key, path: path, m: map[string]any{}}
	if v == nil {
		return n
	}
	m, ok := v.(map[string]any)
	if !ok {
		d.fail(key, v, "a mapping")
		n.wrong = true
		return n
	}
	n.m = m
	allowed := children(path)
	for _, name := range slices.Sorted(maps.Keys(m)) {
		if !slices.Contains(allowed, name) {
			d.fail(join(key, name), "(unknown key)", "one of "+strings.Join(allowed, ", "))
		}
	}
	return n
}

// child is the mapping at name in n.
func (d *decoder) child(n node, name string) node {
	return d.object(join(n.key, name), join(n.path, name), n.m[name])
}

// declared returns the default of the key name in n, nil when it has none.
// Reading a key that keys does not declare is a bug in this package.
func (d *decoder) declared(n node, name string) any {
	path := join(n.path, name)
	def, ok := lookup(path)
	if !ok {
		panic("config: the decoder reads " + path + ", which keys does not declare")
	}
	if d.used == nil {
		d.used = map[string]bool{}
	}
	d.used[path] = true
	return def
}

// value returns the file's value of the key name in n or, when the file
// leaves it out or sets it to null, its default; nil when there is neither.
func (d *decoder) value(n node, name string) any {
	def := d.declared(n, name)
	if v := n.m[name]; v != nil {
		return v
	}
	return def
}

// read reads the key name in n with parse, which reports whether the value
// is valid. An invalid value is reported as wanting want, and the key's
// default stands in for it so that one mistake is reported once. A key left
// out without a default reads as the zero T.
func read[T any](d *decoder, n node, name, want string, parse func(any) (T, bool)) T {
	def := d.declared(n, name)
	v := n.m[name]
	if v == nil {
		v = def
	}
	var zero T
	if v == nil {
		return zero
	}
	if t, ok := parse(v); ok {
		return t
	}
	d.fail(join(n.key, name), v, want)
	if def == nil {
		return zero
	}
	t, _ := parse(def)
	return t
}

func (d *decoder) str(n node, name string) string {
	return read(d, n, name, "a string", func(v any) (string, bool) {
		s, ok := v.(string)
		return s, ok
	})
}

func (d *decoder) oneOf(n node, name string, allowed []string) string {
	s := d.str(n, name)
	if !slices.Contains(allowed, s) {
		d.fail(join(n.key, name), s, "one of "+strings.Join(allowed, ", "))
	}
	return s
}

// integer reads a whole number of at least least. Environment overrides
// and quoted YAML give it as a string.
func (d *decoder) integer(n node, name string, least int) int {
	return read(d, n, name, fmt.Sprintf("a whole number of at least %d", least), func(v any) (int, bool) {
		var i int
		switch x := v.(type) {
		case int:
			i = x
		case int64:
			i = int(x)
		case float64:
			if x != float64(int(x)) {
				return 0, false
			}
			i = int(x)
		case string:
			var err error
			if i, err = strconv.Atoi(strings.TrimSpace(x)); err != nil {
				return 0, false
			}
		default:
			return 0, false
		}
		return i, i >= least
	})
}

// size reads a number of bytes: a whole number, or one with a unit of
// KiB, MiB or GiB ("64KiB"). A key's "0" means no limit where its meaning
// says so.
func (d *decoder) size(n node, name string) int64 {
	return read(d, n, name, "a size in bytes, such as 65536, 64KiB, 16MiB or 1GiB", func(v any) (int64, bool) {
		switch x := v.(type) {
		case int:
			return int64(x), x >= 0
		case int64:
			return x, x >= 0
		case float64:
			return int64(x), x >= 0 && x == float64(int64(x))
		case string:
			return parseSize(x)
		}
		return 0, false
	})
}

// parseSize parses a whole number of bytes with an optional binary unit.
func parseSize(s string) (int64, bool) {
	s = strings.TrimSpace(s)
	unit := int64(1)
	for _, u := range []struct {
		suffix string
		bytes  int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}} {
		if rest, ok := strings.CutSuffix(s, u.suffix); ok {
			s, unit = strings.TrimSpace(rest), u.bytes
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/unit {
		return 0, false
	}
	return n * unit, true
}

func (d *decoder) boolean(n node, name string) bool {
	return read(d, n, name, "true or false", func(v any) (bool, bool) {
		switch x := v.(type) {
		case bool:
			return x, true
		case string:
			b, err := strconv.ParseBool(x)
			return b, err == nil
		}
		return false, false
	})
}

// duration reads a positive Go duration. A key left out without a default
// reads as 0.
func (d *decoder) duration(n node, name string) time.Duration {
	return read(d, n, name, "a positive duration such as 500ms or 30s", func(v any) (time.Duration, bool) {
		s, _ := v.(string)
		dur, err := time.ParseDuration(s)
		return dur, err == nil && dur > 0
	})
}

// durationOrZero reads a Go duration of 0 or more; 0 is a key's "off".
func (d *decoder) durationOrZero(n node, name string) time.Duration {
	return read(d, n, name, "a duration such as 0s, 500ms or 30s", func(v any) (time.Duration, bool) {
		s, _ := v.(string)
		dur, err := time.ParseDuration(s)
		return dur, err == nil && dur >= 0
	})
}

// hostPort reads a host:port; the host may be left out (":8443") for every
// interface.
func (d *decoder) hostPort(n node, name string) string {
	s := d.str(n, name)
	if s == "" && d.declared(n, name) == nil {
		d.fail(join(n.key, name), nil, "host:port")
		return s
	}
	host, port, err := net.SplitHostPort(s)
	if err == nil {
		var p int
		p, err = strconv.Atoi(port)
		if err == nil && (p < 0 || p > 65535) {
			err = errors.New("port out of range")
		}
	}
	if err != nil || host == "" && !strings.HasPrefix(s, ":") {
		d.fail(join(n.key, name), s, "host:port, such as 127.0.0.1:8443")
	}
	return s
}
