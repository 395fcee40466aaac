package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// UnmarshalYAML reads a duration in Go's syntax: "250ms", "10s", "15m", "24h".
// Its range is checked by validation, which knows the field.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return &nodeError{n.Line, n.Column, "must be a duration such as 250ms, 10s, 15m or 24h, not a list or mapping"}
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		why := "write e.g. 250ms, 10s, 15m or 24h"
		if _, err := strconv.ParseFloat(n.Value, 64); err == nil {
			why = "the unit is missing: write e.g. " + n.Value + "s or " + n.Value + "m"
		}
		return &nodeError{n.Line, n.Column, fmt.Sprintf("%q is not a duration: %s", n.Value, why)}
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as Unmarshal reads it, without zero units:
// "250ms", "10m", "8760h", "1h30m".
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// String is time.Duration's String without trailing zero units ("15m", not "15m0s").
func (d Duration) String() string {
	s := time.Duration(d).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
