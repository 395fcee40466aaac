package config

import (
	"strings"
	"testing"
	"time"
)

func TestControllerDefaults(t *testing.T) {
	c, err := Parse("e.yaml", []byte("{}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Controller.Timeout.D() != 10*time.Second || len(c.Controller.Claims) != 0 || c.Controller.LocationFile != "" || c.Controller.Addresses {
		t.Fatalf("controller defaults = %+v", c.Controller)
	}
	c, err = Parse("e.yaml", []byte("controller:\n  claims: {site: plant-7, rack: r2}\n  location_file: /run/gnss/location\n  addresses: true\n  timeout: 3s\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Controller.Claims["site"] != "plant-7" || c.Controller.LocationFile != "/run/gnss/location" || !c.Controller.Addresses || c.Controller.Timeout.D() != 3*time.Second {
		t.Fatalf("controller = %+v", c.Controller)
	}
}

func TestControllerErrorsNameTheField(t *testing.T) {
	var many strings.Builder
	for i := range maxStaticClaims + 1 {
		many.WriteString("    c" + string(rune('a'+i)) + ": x\n")
	}
	cases := []struct {
		name, doc  string
		line       int
		field, msg string
	}{
		{"a reserved claim", "controller:\n  claims: {location: here}\n", 2, "controller.claims.location", "is filled in by edgeseal"},
		{"device_id is edgeseal's", "controller:\n  claims: {device_id: x}\n", 2, "controller.claims.device_id", "is filled in by edgeseal"},
		{"a claim name is lower case", "controller:\n  claims: {Site: x}\n", 2, "controller.claims.Site", "is not a claim name"},
		{"a claim value is bounded", "controller:\n  claims: {site: " + strings.Repeat("x", 257) + "}\n", 2, "controller.claims.site", "257 bytes"},
		{"at most 13 claims", "controller:\n  claims:\n" + many.String(), 2, "controller.claims", "at most 13"},
		{"the location file is absolute", "controller:\n  location_file: run/loc\n", 2, "controller.location_file", "absolute, clean path"},
		{"the timeout is bounded", "controller:\n  timeout: 10m\n", 2, "controller.timeout", "out of range: use 100ms to 5m"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("/etc/edgeseal/edgeseal.yaml", []byte(tc.doc))
			checkError(t, err, tc.line, tc.field, tc.msg)
		})
	}
}
