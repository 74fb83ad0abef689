package config

import "fmt"

// Error is one problem with one key. Load returns every Error it finds,
// joined with errors.Join.
type Error struct {
	Key   string // the key path, e.g. routes[0].timeout
	Value any    // the value found; nil when the key is missing
	Want  string // what was expected instead
}

func (e *Error) Error() string {
	if e.Value == nil {
		return fmt.Sprintf("%s: missing; want %s", e.Key, e.Want)
	}
	return fmt.Sprintf("%s: %q is not valid; want %s", e.Key, fmt.Sprint(e.Value), e.Want)
}
