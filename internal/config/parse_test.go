package config

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestParseErrorsNameFileLineAndField(t *testing.T) {
	cases := []struct {
		name  string
		doc   string
		line  int
		field string
		msg   string
	}{
		// Decoding.
		{"an unknown key is an error naming its line", "vault:\n  mount: secret\n  lisen: 1.2.3.4:1\n", 3, "vault.lisen", "unknown key"},
		{"an unknown top-level key is an error", "valut: {}\n", 1, "valut", "unknown key"},
		{"an unknown key in a flow mapping is named", "vault: {mount: x, lisen: y}\n", 1, "vault.lisen", "unknown key"},
		{"an unknown service key names the service", "services:\n  - name: a\n  - name: b\n    policy: x\n", 4, "services[1].policy", "unknown key"},
		{"an unknown key set through an alias names where it lands", "vault: &v {mount: x}\npki: *v\n", 1, "pki.mount", "unknown key"},
		{"a key set twice is refused", "vault:\n  mount: a\n  mount: b\n", 3, "vault.mount", "set twice (first at line 2)"},
		{"a wrongly typed value names its line", "vault:\n  kv_version: two\n", 2, "vault.kv_version", "must be a whole number, not `two`"},
		{"a wrongly typed value in a flow mapping is named", "vault: {mount: x, kv_version: two}\n", 1, "vault.kv_version", "whole number"},
		{"a list where a string goes is named", "services:\n  - name: [a]\n", 2, "services[0].name", "must be a string, not a list"},
		{"a scalar where a list goes is named", "pki:\n  extra_names: a.b\n", 2, "pki.extra_names", "must be a list"},
		{"a bool must be true or false", "pki:\n  intermediate: maybe\n", 2, "pki.intermediate", "true or false"},
		{"a document that is not a mapping is refused", "vault\n", 1, "", "must be a mapping"},
		{"a bad duration names its field", "vault:\n  watch_interval: soon\n", 2, "vault.watch_interval", "not a duration"},
		{"a duration without unit says so", "seal:\n  ikm_hook:\n    timeout: 10\n", 3, "seal.ikm_hook.timeout", "the unit is missing"},
		{"a duration given as a list names its field", "vault: {mount: x, watch_interval: [1]}\n", 1, "vault.watch_interval", "must be a duration"},
		{"two documents are refused", "vault: {}\n---\npki: {}\n", 2, "", "more than one YAML document"},
		{"two documents are refused even if the second is broken", "vault: {}\n---\npki: [\n", 3, "", "more than one YAML document"},
		{"a syntax error names its line", "vault:\n  listen: [\n", 2, "", "invalid YAML"},
		{"control characters are refused", "vault: \x01\n", 0, "", "invalid YAML"},

		// vault
		{"kv_version must be 1 or 2", "vault:\n  kv_version: 3\n", 2, "vault.kv_version", "must be 1 or 2"},
		{"a listen host must be an IP", "vault:\n  listen: localhost:8200\n", 2, "vault.listen", "must be an IP address"},
		{"a listen host must be given", "vault:\n  listen: ':8200'\n", 2, "vault.listen", "must be an IP address"},
		{"a listen port must be a port", "vault:\n  listen: 127.0.0.1:99999\n", 2, "vault.listen", "between 1 and 65535"},
		{"a listen port is not 0", "vault:\n  listen: 127.0.0.1:0\n", 2, "vault.listen", "between 1 and 65535"},
		{"a listen without port is refused", "vault:\n  listen: 127.0.0.1\n", 2, "vault.listen", "IP address and a port"},
		{"storage_path must be absolute", "vault:\n  storage_path: var/lib/x\n", 2, "vault.storage_path", "absolute"},
		{"storage_path must be clean", "vault:\n  storage_path: /var/../x\n", 2, "vault.storage_path", "clean"},
		{"storage_path is not the root", "vault:\n  storage_path: /\n", 2, "vault.storage_path", "absolute"},
		{"mount must be a name", "vault:\n  mount: Secret/x\n", 2, "vault.mount", "must match"},
		{"mount is at most 64 characters", "vault:\n  mount: " + strings.Repeat("a", 65) + "\n", 2, "vault.mount", "at most 64"},
		{"secret_prefix must be a name", "vault:\n  secret_prefix: ''\n", 2, "vault.secret_prefix", "must match"},
		{"secret_prefix starts with a letter or digit", "vault:\n  secret_prefix: -x\n", 2, "vault.secret_prefix", "must match"},
		{"watch_interval has a floor", "vault:\n  watch_interval: 1ms\n", 2, "vault.watch_interval", "between 50ms and 10s"},
		{"watch_interval has a ceiling", "vault:\n  watch_interval: 11s\n", 2, "vault.watch_interval", "between 50ms and 10s"},
		{"a negative duration is refused", "vault:\n  watch_interval: -1s\n", 2, "vault.watch_interval", "out of range"},

		// pki
		{"pki validity has a floor", "pki:\n  validity: 30m\n", 2, "pki.validity", "between 1h and 87600h"},
		{"pki validity has a ceiling", "pki:\n  validity: 87601h\n", 2, "pki.validity", "between 1h and 87600h"},
		{"a CA key lives in memory or a TPM", "pki:\n  validity: 1h\n  ca_key: hsm\n", 3, "pki.ca_key", "use memory or tpm"},
		{"a TPM CA key needs a TPM device even with another sealer", "pki:\n  ca_key: tpm\nseal:\n  method: ikm-hook\n  tpm2:\n    device: /tmp/tpm\n", 6, "seal.tpm2.device", "must be a TPM device"},
		{"an extra name must be a DNS name or IP", "pki:\n  extra_names:\n    - ok.example\n    - 'bad name'\n", 4, "pki.extra_names[1]", "neither an IP"},
		{"an extra name has no empty label", "pki:\n  extra_names: [a..b]\n", 2, "pki.extra_names[0]", "neither an IP"},
		{"an extra name label does not end in a hyphen", "pki:\n  extra_names: [a-.b]\n", 2, "pki.extra_names[0]", "neither an IP"},
		{"an extra name label is at most 63 characters", "pki:\n  extra_names: [" + strings.Repeat("a", 64) + ".b]\n", 2, "pki.extra_names[0]", "neither an IP"},
		{"an extra name listed twice is refused", "pki:\n  extra_names: [a.b, a.b]\n", 2, "pki.extra_names[1]", "twice"},

		// seal
		{"the service CA needs a mount of its own", "service_tls:\n  mount: secret\n", 2, "service_tls.mount", "vault.mount too"},
		{"a service CA mount is a name", "service_tls:\n  mount: a/b\n", 2, "service_tls.mount", "must match"},
		{"a trust domain is a SPIFFE host", "service_tls:\n  trust_domain: Plant7.Example\n", 2, "service_tls.trust_domain", "not a SPIFFE trust domain"},
		{"a trust domain has no scheme", "service_tls:\n  trust_domain: 'spiffe://x'\n", 2, "service_tls.trust_domain", "not a SPIFFE trust domain"},
		{"a service certificate lives at least 5m", "service_tls:\n  ttl: 1m\n", 2, "service_tls.ttl", "between 5m and 720h"},
		{"a TLS service's name is a DNS name", "services:\n  - name: my_svc\n    tls: true\n", 3, "services[0].tls", "underscore"},
		{"tls is yes or no", "services:\n  - name: a\n    tls: maybe\n", 3, "services[0].tls", ""},
		{"an unknown seal method is refused", "seal:\n  method: magic\n", 2, "seal.method", "not a seal method"},
		{"none needs consent", "seal:\n  method: none\n", 2, "seal.method", "in clear on disk and is for development only"},
		{"the hook path must be absolute", "seal:\n  method: ikm-hook\n  ikm_hook:\n    command: [hook]\n", 4, "seal.ikm_hook.command", "absolute"},
		{"the hook command must not be empty", "seal:\n  method: ikm-hook\n  ikm_hook:\n    command: []\n", 4, "seal.ikm_hook.command", "empty"},
		{"the hook timeout has a floor", "seal:\n  method: ikm-hook\n  ikm_hook:\n    timeout: 500ms\n", 4, "seal.ikm_hook.timeout", "between 1s and 5m"},
		{"the hook timeout has a ceiling", "seal:\n  method: ikm-hook\n  ikm_hook:\n    timeout: 10m\n", 4, "seal.ikm_hook.timeout", "between 1s and 5m"},
		{"a tpm2 device must be a device or swtpm", "seal:\n  method: tpm2\n  tpm2:\n    device: tpm0\n", 4, "seal.tpm2.device", "must be a TPM device"},
		{"a swtpm device needs a port", "seal:\n  method: tpm2\n  tpm2:\n    device: 'swtpm:localhost'\n", 4, "seal.tpm2.device", "swtpm:HOST:PORT"},
		{"a swtpm device on another host is refused", "seal:\n  method: tpm2\n  tpm2:\n    device: 'swtpm:192.0.2.7:2321'\n", 4, "seal.tpm2.device", "must listen on loopback"},
		{"a swtpm device named by a host name is refused", "seal:\n  method: tpm2\n  tpm2:\n    device: 'swtpm:tpm.example:2321'\n", 4, "seal.tpm2.device", "must listen on loopback"},
		{"a swtpm device on every address is refused", "seal:\n  method: tpm2\n  tpm2:\n    device: 'swtpm:0.0.0.0:2321'\n", 4, "seal.tpm2.device", "must listen on loopback"},
		{"a swtpm device needs a port number", "seal:\n  method: tpm2\n  tpm2:\n    device: 'swtpm:127.0.0.1:tpm'\n", 4, "seal.tpm2.device", "port from 1 to 65535"},
		{"tpm2 needs PCRs", "seal:\n  method: tpm2\n  tpm2:\n    pcrs: []\n", 4, "seal.tpm2.pcrs", "at least one PCR"},
		{"a PCR is 0 to 23", "seal:\n  method: tpm2\n  tpm2:\n    pcrs: [7, 24]\n", 4, "seal.tpm2.pcrs[1]", "not a PCR"},
		{"a PCR listed twice is refused", "seal:\n  method: tpm2\n  tpm2:\n    pcrs: [7, 7]\n", 4, "seal.tpm2.pcrs[1]", "twice"},
		{"a PIN file path is absolute", "seal:\n  method: tpm2\n  tpm2:\n    pin_file: pin\n", 4, "seal.tpm2.pin_file", "absolute"},
		{"a TPM storage is file or nv", "seal:\n  tpm2:\n    storage: flash\n", 3, "seal.tpm2.storage", "use file or nv"},
		{"an NV index below the owner range is refused", "seal:\n  tpm2:\n    storage: nv\n    nv_index: 0x00ffffff\n", 4, "seal.tpm2.nv_index", "owner's NV range"},
		{"an NV index in the TCG's reserved range is refused", "seal:\n  tpm2:\n    storage: nv\n    nv_index: 0x01c00002\n", 4, "seal.tpm2.nv_index", "owner's NV range"},
		{"the last owner handle has no next one for the second slot", "seal:\n  tpm2:\n    storage: nv\n    nv_index: 0x013fffff\n", 4, "seal.tpm2.nv_index", "the next handle"},
		{"a counter index outside the owner range is refused", "seal:\n  tpm2:\n    storage: nv\n    counter_index: 0x01880001\n", 4, "seal.tpm2.counter_index", "owner's NV range"},
		{"the counter cannot share the key's handle", "seal:\n  tpm2:\n    storage: nv\n    nv_index: 0x01000010\n    counter_index: 0x01000010\n", 5, "seal.tpm2.counter_index", "choose another"},
		{"the counter cannot be the key's second slot", "seal:\n  tpm2:\n    storage: nv\n    nv_index: 0x01000010\n    counter_index: 0x01000011\n", 5, "seal.tpm2.counter_index", "choose another"},
		{"an NV index is a number", "seal:\n  tpm2:\n    nv_index: first\n", 3, "seal.tpm2.nv_index", "uint32"},
		{"a recovery key path is absolute", "seal:\n  recovery_key: key.pem\n", 2, "seal.recovery_key", "absolute"},
		{"pkcs11 needs a module", "seal:\n  method: pkcs11\n  pkcs11:\n    token_label: dev\n", 3, "seal.pkcs11.module", "is empty"},
		{"a pkcs11 module path is absolute", "seal:\n  method: pkcs11\n  pkcs11:\n    module: libsofthsm2.so\n    token_label: dev\n", 4, "seal.pkcs11.module", "absolute, clean path"},
		{"a pkcs11 module path is clean", "seal:\n  method: pkcs11\n  pkcs11:\n    module: /usr/lib/../lib/p11.so\n    token_label: dev\n", 4, "seal.pkcs11.module", "absolute, clean path"},
		{"pkcs11 needs a token", "seal:\n  method: pkcs11\n  pkcs11:\n    module: /usr/lib/p11.so\n", 3, "seal.pkcs11.token_label", "name the token by one of them"},
		{"pkcs11 takes a token label or a serial, not both", "seal:\n  method: pkcs11\n  pkcs11:\n    module: /usr/lib/p11.so\n    token_label: dev\n    token_serial: 0a1b\n", 6, "seal.pkcs11.token_serial", "one of them only"},
		{"a token label is at most 32 bytes", "seal:\n  method: pkcs11\n  pkcs11:\n    module: /usr/lib/p11.so\n    token_label: " + strings.Repeat("x", 33) + "\n", 5, "seal.pkcs11.token_label", "at most 32"},
		{"a token serial is at most 16 bytes", "seal:\n  method: pkcs11\n  pkcs11:\n    module: /usr/lib/p11.so\n    token_serial: " + strings.Repeat("0", 17) + "\n", 5, "seal.pkcs11.token_serial", "at most 16"},
		{"a token label has no padding", "seal:\n  method: pkcs11\n  pkcs11:\n    module: /usr/lib/p11.so\n    token_label: 'dev '\n", 5, "seal.pkcs11.token_label", "trailing spaces"},
		{"pkcs11 needs a key label", "seal:\n  method: pkcs11\n  pkcs11:\n    module: /usr/lib/p11.so\n    token_label: dev\n    key_label: ''\n", 6, "seal.pkcs11.key_label", "is empty"},
		{"a key label is at most 64 bytes", "seal:\n  method: pkcs11\n  pkcs11:\n    module: /usr/lib/p11.so\n    token_label: dev\n    key_label: " + strings.Repeat("k", 65) + "\n", 6, "seal.pkcs11.key_label", "at most 64"},
		{"a pkcs11 PIN file path is absolute", "seal:\n  method: pkcs11\n  pkcs11:\n    module: /usr/lib/p11.so\n    token_label: dev\n    pin_file: pin\n", 6, "seal.pkcs11.pin_file", "absolute"},
		{"a pkcs11 environment names variables", "seal:\n  method: pkcs11\n  pkcs11:\n    module: /usr/lib/p11.so\n    token_label: dev\n    environment: [OPENSC_CONF, 'A=B']\n", 6, "seal.pkcs11.environment", "not a variable name"},
		{"a pkcs11 environment cannot steer the loader", "seal:\n  method: pkcs11\n  pkcs11:\n    module: /usr/lib/p11.so\n    token_label: dev\n    environment: [LD_PRELOAD]\n", 6, "seal.pkcs11.environment", "LD_PRELOAD"},
		{"a pkcs11 environment keeps the helper's PATH", "seal:\n  method: pkcs11\n  pkcs11:\n    module: /usr/lib/p11.so\n    token_label: dev\n    environment: [PATH]\n", 6, "seal.pkcs11.environment", "PATH"},
		{"a pkcs11 environment is a list", "seal:\n  method: pkcs11\n  pkcs11:\n    module: /usr/lib/p11.so\n    token_label: dev\n    environment: OPENSC_CONF\n", 6, "seal.pkcs11.environment", "must be a list"},
		{"the pkcs11 timeout has a ceiling", "seal:\n  method: pkcs11\n  pkcs11:\n    module: /usr/lib/p11.so\n    token_label: dev\n    timeout: 6m\n", 6, "seal.pkcs11.timeout", "between 1s and 5m"},

		// tokens
		{"service_period has a floor", "tokens:\n  service_period: 10s\n", 2, "tokens.service_period", "between 1m and 8760h"},
		{"issuing_period has a ceiling", "tokens:\n  issuing_period: 8761h\n", 2, "tokens.issuing_period", "between 1m and 8760h"},
		{"tokend_user must be a user name", "tokens:\n  tokend_user: 'Root User'\n", 2, "tokens.tokend_user", "not a valid user"},
		{"tokend_user does not start with a digit", "tokens:\n  tokend_user: 1user\n", 2, "tokens.tokend_user", "not a valid user"},
		{"tokend_user is at most 32 characters", "tokens:\n  tokend_user: " + strings.Repeat("u", 33) + "\n", 2, "tokens.tokend_user", "not a valid user"},
		{"issuing_rotation is at most half the period", "tokens:\n  issuing_period: 2h\n  issuing_rotation: 90m\n", 3, "tokens.issuing_rotation", "more than half"},
		{"issuing_rotation has a floor", "tokens:\n  issuing_rotation: 30s\n", 2, "tokens.issuing_rotation", "at least 1m"},
		{"wrap_ttl has a floor", "tokens:\n  wrap_ttl: 1s\n", 2, "tokens.wrap_ttl", "between 10s and 24h"},
		{"revoke_delay has a ceiling", "tokens:\n  revoke_delay: 2m\n", 2, "tokens.revoke_delay", "between 0s and 1m"},

		// tokend
		{"idle_exit is 0 or at least 1s", "tokend:\n  idle_exit: 10ms\n", 2, "tokend.idle_exit", "0 (never) or between 1s"},
		{"request_timeout has a ceiling", "tokend:\n  request_timeout: 2m\n", 2, "tokend.request_timeout", "between 100ms and 1m"},
		{"max_in_flight is at least 1", "tokend:\n  max_in_flight: 0\n", 2, "tokend.max_in_flight", "between 1 and 4096"},
		{"an unknown tokend key is refused", "tokend:\n  idle: 1s\n", 2, "tokend.idle", "unknown"},

		// identities
		{"a unit must be a unit name", "services:\n  - name: a\n    units: [app-one]\n", 3, "services[0].units[0]", "not a systemd unit name"},
		{"a unit with a slash is refused", "services:\n  - name: a\n    units: ['../x.service']\n", 3, "services[0].units[0]", "not a systemd unit name"},
		{"edgeseal's own units get no token", "services:\n  - name: a\n    units: [edgeseal-unseal.service]\n", 3, "services[0].units[0]", "edgeseal's own"},
		{"a unit is one service", "services:\n  - name: a\n    units: [x.service]\n  - name: b\n    units: [x.service]\n", 5, "services[1].units[0]", `already belongs to service "a"`},
		{"a snap app needs snap and app", "services:\n  - name: a\n    snap_apps: [justsnap]\n", 3, "services[0].snap_apps[0]", "not a snap app"},
		{"a snap app is one service", "services:\n  - name: a\n    snap_apps: [sx.app]\n  - name: b\n    snap_apps: [sx.app]\n", 5, "services[1].snap_apps[0]", "already belongs"},
		{"uid 0 is refused", "services:\n  - name: a\n    uids: [0]\n", 3, "services[0].uids[0]", "every root process"},
		{"a uid is one service", "services:\n  - name: a\n    uids: [1001]\n  - name: b\n    uids: [7, 1001]\n", 5, "services[1].uids[1]", `uid 1001 already belongs to service "a"`},
		{"gid 0 is refused", "services:\n  - name: a\n    gids: [0]\n", 3, "services[0].gids[0]", "every root process"},
		{"an executable pin is a SHA-256", "services:\n  - name: a\n    units: [a.service]\n    exe_sha256: [abc]\n", 4, "services[0].exe_sha256[0]", "not a SHA-256"},
		{"an executable pin is lower-case hex", "services:\n  - name: a\n    exe_sha256: ['" + strings.Repeat("A", 64) + "']\n", 3, "services[0].exe_sha256[0]", "lower-case hex"},
		{"an executable pinned twice is refused", "services:\n  - name: a\n    exe_sha256:\n      - " + strings.Repeat("a", 64) + "\n      - " + strings.Repeat("a", 64) + "\n", 5, "services[0].exe_sha256[1]", "listed twice"},
		{"a unit file pin is an absolute path", "services:\n  - name: a\n    units: [a.service]\n    unit_files: [a.service]\n", 4, "services[0].unit_files[0]", "not an absolute, clean path"},
		{"a unit file pin is clean", "services:\n  - name: a\n    unit_files: [/etc/systemd/system/../x/a.service]\n", 3, "services[0].unit_files[0]", "not an absolute, clean path"},
		{"a unit file pin names a unit file or a drop-in", "services:\n  - name: a\n    unit_files: [/etc/passwd]\n", 3, "services[0].unit_files[0]", "neither a unit file"},
		{"a drop-in pin is in a .d directory", "services:\n  - name: a\n    unit_files: [/etc/systemd/system/a.service, /etc/x.conf]\n", 3, "services[0].unit_files[1]", "not a drop-in"},
		{"unit file pins of drop-ins only are refused", "services:\n  - name: a\n    unit_files:\n      - /etc/systemd/system/a.service.d/x.conf\n", 3, "services[0].unit_files", "drop-ins only"},
		{"a unit file pinned twice is refused", "services:\n  - name: a\n    unit_files:\n      - /etc/systemd/system/a.service\n      - /etc/systemd/system/a.service\n", 5, "services[0].unit_files[1]", "listed twice"},
		{"a unit file pin is bounded", "services:\n  - name: a\n    unit_files: [/" + strings.Repeat("d/", 130) + "a.service]\n", 3, "services[0].unit_files[0]", "at most 255"},
		{"a snap revision pin is a revision", "services:\n  - name: a\n    snap_apps: [ab.d]\n    snap_revisions: ['042']\n", 4, "services[0].snap_revisions[0]", "not a snap revision"},
		{"a local snap revision pin is x and a number", "services:\n  - name: a\n    snap_revisions: [x0]\n", 3, "services[0].snap_revisions[0]", "local install"},
		{"a snap revision pinned twice is refused", "services:\n  - name: a\n    snap_revisions:\n      - x1\n      - x1\n", 5, "services[0].snap_revisions[1]", "listed twice"},
		{"snap revision pins are bounded", "services:\n  - name: a\n    snap_revisions: [" + strings.TrimSuffix(strings.Repeat("1, ", 17), ", ") + "]\n", 3, "services[0].snap_revisions", "at most 16"},
		{"a publisher pin is an account id", "services:\n  - name: a\n    snap_publishers: [Canonical]\n", 3, "services[0].snap_publishers[0]", "not a publisher id"},
		{"a publisher pin is bounded", "services:\n  - name: a\n    snap_publishers: [" + strings.Repeat("a", 33) + "]\n", 3, "services[0].snap_publishers[0]", "32 letters and digits"},
		{"a snap pin on a service that names no snap is refused", "services:\n  - name: a\n    uids: [584788]\n    snap_publishers: [canonical]\n", 4, "services[0].snap_publishers", "names none"},
		{"a snap revision pin needs a snap app or a snap's unit", "services:\n  - name: a\n    units: [snapper.service]\n    snap_revisions: ['42']\n", 4, "services[0].snap_revisions", "a revision or publisher alone would pass any snap's"},
		{"a publisher pinned twice is refused", "services:\n  - name: a\n    snap_publishers:\n      - canonical\n      - canonical\n", 5, "services[0].snap_publishers[1]", "listed twice"},
		{"a negative uid is refused", "services:\n  - name: a\n    uids: [-1]\n", 3, "services[0].uids[0]", "uint32"},

		// services
		{"a service name must be a name", "services:\n  - name: ok\n  - name: Bad/Name\n", 3, "services[1].name", "must match"},
		{"a service needs a name", "services:\n  - shared_read: [g]\n", 2, "services[0].name", "must match"},
		{"a service named twice is refused", "services:\n  - name: a\n  - name: a\n", 3, "services[1].name", "twice"},
		{"shared is reserved", "services:\n  - name: shared\n", 2, "services[0].name", "reserved"},
		{"a group in both lists is refused", "services:\n  - name: a\n    shared_read: [g]\n    shared_write: [g]\n", 3, "services[0].shared_read[0]", "both"},
		{"a bad write group name is refused", "services:\n  - name: a\n    shared_write: ['G!']\n", 3, "services[0].shared_write[0]", "must match"},
		{"a bad read group name is refused", "services:\n  - name: a\n    shared_read:\n      - ok\n      - ''\n", 5, "services[0].shared_read[1]", "must match"},
		{"more than 1000 services are refused", "# many\nservices:\n" + services(MaxServices+1), 2, "services", "at most 1000"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("/etc/edgeseal/edgeseal.yaml", []byte(tc.doc))
			checkError(t, err, tc.line, tc.field, tc.msg)
		})
	}
}

func services(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "  - name: s%d\n", i)
	}
	return b.String()
}

func TestValidConfigsAreAccepted(t *testing.T) {
	cases := []struct{ name, doc string }{
		{"the EdgeX layout", "vault:\n  kv_version: 1\n  secret_prefix: edgex\n"},
		{"an IPv6 listen address", "vault:\n  listen: '[::1]:8200'\n"},
		{"listening on all addresses", "vault:\n  listen: 0.0.0.0:8200\n"},
		{"the shortest and longest names", "vault:\n  mount: a\n  secret_prefix: " + strings.Repeat("a", 64) + "\n"},
		{"the floor of watch_interval", "vault:\n  watch_interval: 50ms\n"},
		{"the ceiling of watch_interval", "vault:\n  watch_interval: 10s\n"},
		{"the floor of validity", "pki:\n  validity: 1h\n"},
		{"the CA key in a software TPM", "pki:\n  ca_key: tpm\nseal:\n  tpm2:\n    device: swtpm:127.0.0.1:2321\n"},
		{"the ceiling of validity", "pki:\n  validity: 87600h\n"},
		{"extra names IP and DNS", "pki:\n  extra_names: [vault.local, 10.0.0.1, 'fe80::1', a-b.c1, 1.example]\n  intermediate: true\n"},
		{"none with consent", "seal:\n  method: none\n  allow_insecure_none: true\n"},
		{"ikm-hook with arguments", "seal:\n  method: ikm-hook\n  ikm_hook:\n    command: [/usr/bin/vendor-ikm, --slot, '1']\n    timeout: 5m\n"},
		{"the floor of the hook timeout", "seal:\n  method: ikm-hook\n  ikm_hook:\n    timeout: 1s\n"},
		{"tpm2 on swtpm", "seal:\n  method: tpm2\n  tpm2:\n    device: 'swtpm:127.0.0.1:2321'\n    pcrs: [0, 7]\n"},
		{"tpm2 on swtpm elsewhere in 127/8", "seal:\n  method: tpm2\n  tpm2:\n    device: 'swtpm:127.3.2.1:2321'\n"},
		{"tpm2 on swtpm at ::1", "seal:\n  method: tpm2\n  tpm2:\n    device: 'swtpm:[::1]:2321'\n"},
		{"tpm2 on swtpm at localhost", "seal:\n  method: tpm2\n  tpm2:\n    device: 'swtpm:localhost:2321'\n"},
		{"pkcs11 by token label", "seal:\n  method: pkcs11\n  pkcs11:\n    module: /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so\n    token_label: edgeseal\n"},
		{"pkcs11 by token serial with its own key and PIN", "seal:\n  method: pkcs11\n  pkcs11:\n    module: /opt/vendor/p11.so\n    token_serial: 8f3a19c0d2e4b5a6\n    key_label: vault-unseal\n    pin_file: /etc/edgeseal/token-pin\n    timeout: 5m\n"},
		{"tpm2 in NV with the default handles", "seal:\n  tpm2:\n    storage: nv\n"},
		{"tpm2 in NV at the ends of the owner range", "seal:\n  tpm2:\n    storage: nv\n    nv_index: 0x01000000\n    counter_index: 0x013fffff\n"},
		{"tpm2 in NV with a PIN", "seal:\n  tpm2:\n    storage: nv\n    pin_file: /etc/edgeseal/pin\n    nv_index: 0x01000002\n    counter_index: 0x01000001\n"},
		{"tpm2 with a PIN and a recovery key", "seal:\n  tpm2:\n    pin_file: /etc/edgeseal/pin\n  recovery_key: /etc/edgeseal/recovery.pem\n"},
		{"the bounds of token periods", "tokens:\n  service_period: 1m\n  issuing_period: 8760h\n"},
		{"a user name with an underscore", "tokens:\n  tokend_user: _tokend\n"},
		{"services with groups", "services:\n  - name: app-one\n    shared_read: [telemetry]\n  - name: collector\n    shared_write: [telemetry]\n"},
		{"1000 services", "services:\n" + services(MaxServices)},
		{"services by every kind of identity", "services:\n  - name: app-one\n    units: [app-one.service, 'app-one@2.service']\n    uids: [1001]\n    wrap: true\n" +
			"  - name: collector\n    snap_apps: [collector.daemon, 'collector_beta.daemon']\n    gids: [1001]\n"},
		{"unit files of a template, drop-ins in every kind of directory", "services:\n  - name: app-one\n    units: ['app-one@2.service']\n    unit_files:\n      - /usr/lib/systemd/system/app-one@.service\n" +
			"      - /etc/systemd/system/app-one@.service.d/10-env.conf\n      - /etc/systemd/system/app-one@2.service.d/override.conf\n      - /usr/lib/systemd/system/service.d/10-timeout-abort.conf\n"},
		{"snap pins of a snap's daemon named by its unit", "services:\n  - name: a\n    units: [snap.collector.daemon.service]\n    snap_revisions: ['42', x3]\n    snap_publishers: [canonical]\n"},
		{"a short issuing period rotates at half of it by default", "tokens:\n  issuing_period: 1m\n"},
		{"the provider never exits when idle", "tokend:\n  idle_exit: 0s\n  max_in_flight: 4096\n"},
		{"a document start and end", "---\nvault:\n  mount: kv\n...\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Parse("e.yaml", []byte(tc.doc)); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestOversizeInputIsRefusedBeforeParsing(t *testing.T) {
	_, err := Parse("big.yaml", make([]byte, MaxSize+1))
	if e, ok := errors.AsType[*Error](err); !ok || e.File != "big.yaml" || !strings.Contains(e.Msg, "larger than 1048576 bytes") {
		t.Errorf("err = %v", err)
	}
	// MaxSize itself is allowed (here, spaces: an empty document).
	if _, err := Parse("max.yaml", []byte(strings.Repeat(" ", MaxSize))); err != nil {
		t.Errorf("a file of MaxSize bytes: %v", err)
	}
}

func TestErrorLeavesOutWhatIsUnknown(t *testing.T) {
	cases := []struct {
		name string
		err  Error
		want string
	}{
		{"file, line and field", Error{"e.yaml", 3, "vault.mount", "bad"}, "e.yaml:3: vault.mount: bad"},
		{"no line", Error{"e.yaml", 0, "vault.mount", "bad"}, "e.yaml: vault.mount: bad"},
		{"no field", Error{"e.yaml", 3, "", "bad"}, "e.yaml:3: bad"},
		{"no file", Error{"", 3, "vault.mount", "bad"}, "line 3: vault.mount: bad"},
		{"only a message", Error{Msg: "bad"}, "bad"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.err.Error(); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// checkError asserts err is the *Error of /etc/edgeseal/edgeseal.yaml at line,
// naming field, with msg in its message.
func checkError(t *testing.T, err error, line int, field, msg string) {
	t.Helper()
	e, ok := errors.AsType[*Error](err)
	if !ok {
		t.Fatalf("err = %v (%T), want *Error", err, err)
	}
	if e.File != "/etc/edgeseal/edgeseal.yaml" {
		t.Errorf("file = %q", e.File)
	}
	if e.Line != line {
		t.Errorf("line = %d, want %d (%v)", e.Line, line, err)
	}
	if e.Field != field {
		t.Errorf("field = %q, want %q (%v)", e.Field, field, err)
	}
	if !strings.Contains(e.Msg, msg) {
		t.Errorf("message %q lacks %q", e.Msg, msg)
	}
}
