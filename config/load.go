package config

import (
	"fmt"
	"strings"

	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/env"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/v2"
)

// EnvPrefix starts every environment variable that overrides a key. The rest
// of the name is the key path in upper case with "__" between levels:
// SPOOKY_ADMIN__ADDRESS sets admin.address, SPOOKY_STAGES__POOL__WORKERS
// sets stages.pool.workers. Keys inside lists (routes) cannot be set this way.
const EnvPrefix = "SPOOKY_"

// Load reads the YAML file at path, applies SPOOKY_ environment overrides
// from the process environment, and validates the result in
// full. On error the Config is nil and the error lists every problem found.
func Load(path string) (*Config, error) {
	raw, err := document(path)
	if err != nil {
		return nil, err
	}
	return decode(raw)
}

// document reads the YAML file at path and the environment overrides into
// one raw document.
func document(path string) (map[string]any, error) {
	k := koanf.New(".")
	if err := k.Load(file.Provider(path), yaml.Parser()); err != nil {
		return nil, fmt.Errorf("config: %s: %w", path, err)
	}
	if err := k.Load(envProvider(), nil); err != nil {
		return nil, fmt.Errorf("config: environment: %w", err)
	}
	return k.Raw(), nil
}

// envProvider maps SPOOKY_A__B_C=v to the key a.b_c.
func envProvider() koanf.Provider {
	return env.Provider(EnvPrefix, ".", func(name string) string {
		return strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(name, EnvPrefix), "__", "."))
	})
}
