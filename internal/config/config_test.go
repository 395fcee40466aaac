package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestSampleIsTheDefault(t *testing.T) {
	cfg, err := Parse("edgeseal.yaml", Sample)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg, Default()) {
		t.Errorf("the sample differs from Default():\n%+v\n%+v", cfg, Default())
	}
}

func TestEmptyFileMeansDefaults(t *testing.T) {
	for _, doc := range []string{"", "\n", "# only a comment\n", "---\n"} {
		cfg, err := Parse("e.yaml", []byte(doc))
		if err != nil || !reflect.DeepEqual(cfg, Default()) {
			t.Errorf("%q: %v", doc, err)
		}
	}
}

func TestParseErrorsNameFileLineAndField(t *testing.T) {
	cases := []struct {
		name  string
		doc   string
		line  int
		field string
		msg   string
	}{
		{"an unknown key is an error naming its line", "vault:\n  mount: secret\n  lisen: 1.2.3.4:1\n", 3, "vault.lisen", "unknown key"},
		{"an unknown top-level key is an error", "valut: {}\n", 1, "valut", "unknown key"},
		{"kv_version must be 1 or 2", "vault:\n  kv_version: 3\n", 2, "vault.kv_version", "must be 1 or 2"},
		{"a listen host must be an IP", "vault:\n  listen: localhost:8200\n", 2, "vault.listen", "must be an IP address"},
		{"a listen port must be a port", "vault:\n  listen: 127.0.0.1:99999\n", 2, "vault.listen", "between 1 and 65535"},
		{"a listen without port is refused", "vault:\n  listen: 127.0.0.1\n", 2, "vault.listen", "IP address and a port"},
		{"storage_path must be absolute", "vault:\n  storage_path: var/lib/x\n", 2, "vault.storage_path", "absolute"},
		{"storage_path must be clean", "vault:\n  storage_path: /var/../x\n", 2, "vault.storage_path", "clean"},
		{"mount must be a name", "vault:\n  mount: Secret/x\n", 2, "vault.mount", "must match"},
		{"secret_prefix must be a name", "vault:\n  secret_prefix: ''\n", 2, "vault.secret_prefix", "must match"},
		{"watch_interval is bounded", "vault:\n  watch_interval: 1ms\n", 2, "vault.watch_interval", "between 50ms and 10s"},
		{"a bad duration names its field", "vault:\n  watch_interval: soon\n", 2, "vault.watch_interval", "not a duration"},
		{"a wrongly typed value names its line", "vault:\n  kv_version: two\n", 2, "vault.kv_version", "cannot unmarshal"},
		{"pki validity is bounded", "pki:\n  validity: 30m\n", 2, "pki.validity", "between 1h0m0s"},
		{"an extra name must be a DNS name or IP", "pki:\n  extra_names:\n    - ok.example\n    - 'bad name'\n", 4, "pki.extra_names[1]", "neither an IP"},
		{"an extra name listed twice is refused", "pki:\n  extra_names: [a.b, a.b]\n", 2, "pki.extra_names[1]", "twice"},
		{"an unknown seal method is refused", "seal:\n  method: magic\n", 2, "seal.method", "not a seal method"},
		{"a tpm2 device must be a device or swtpm", "seal:\n  method: tpm2\n  tpm2:\n    device: tpm0\n", 4, "seal.tpm2.device", "must be a TPM device"},
		{"a swtpm device needs a port", "seal:\n  method: tpm2\n  tpm2:\n    device: 'swtpm:localhost'\n", 4, "seal.tpm2.device", "swtpm:HOST:PORT"},
		{"tpm2 needs PCRs", "seal:\n  method: tpm2\n  tpm2:\n    pcrs: []\n", 4, "seal.tpm2.pcrs", "at least one PCR"},
		{"a PCR is 0 to 23", "seal:\n  method: tpm2\n  tpm2:\n    pcrs: [7, 24]\n", 4, "seal.tpm2.pcrs[1]", "not a PCR"},
		{"a PCR listed twice is refused", "seal:\n  method: tpm2\n  tpm2:\n    pcrs: [7, 7]\n", 4, "seal.tpm2.pcrs[1]", "twice"},
		{"a PIN file path is absolute", "seal:\n  method: tpm2\n  tpm2:\n    pin_file: pin\n", 4, "seal.tpm2.pin_file", "absolute"},
		{"none needs consent", "seal:\n  method: none\n", 2, "seal.method", "allow_insecure_none"},
		{"the hook path must be absolute", "seal:\n  method: ikm-hook\n  ikm_hook:\n    command: [hook]\n", 4, "seal.ikm_hook.command", "absolute"},
		{"the hook command must not be empty", "seal:\n  method: ikm-hook\n  ikm_hook:\n    command: []\n", 4, "seal.ikm_hook.command", "empty"},
		{"the hook timeout is bounded", "seal:\n  method: ikm-hook\n  ikm_hook:\n    timeout: 10m\n", 4, "seal.ikm_hook.timeout", "between"},
		{"periods are bounded", "tokens:\n  service_period: 10s\n", 2, "tokens.service_period", "between"},
		{"tokend_user must be a user name", "tokens:\n  tokend_user: 'Root User'\n", 2, "tokens.tokend_user", "not a valid user"},
		{"a service name must be a name", "services:\n  - name: ok\n  - name: Bad/Name\n", 3, "services[1].name", "must match"},
		{"a service named twice is refused", "services:\n  - name: a\n  - name: a\n", 3, "services[1].name", "twice"},
		{"shared is reserved", "services:\n  - name: shared\n", 2, "services[0].name", "reserved"},
		{"a group in both lists is refused", "services:\n  - name: a\n    shared_read: [g]\n    shared_write: [g]\n", 3, "services[0].shared_read[0]", "both"},
		{"a bad group name is refused", "services:\n  - name: a\n    shared_write: ['G!']\n", 3, "services[0].shared_write[0]", "must match"},
		{"an unknown service key names the service", "services:\n  - name: a\n    policy: x\n", 3, "services[].policy", "unknown key"},
		{"two documents are refused", "vault: {}\n---\npki: {}\n", 0, "", "more than one YAML document"},
		{"a syntax error names its line", "vault:\n  listen: [\n", 0, "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("/etc/edgeseal/edgeseal.yaml", []byte(tc.doc))
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("err = %v (%T), want *Error", err, err)
			}
			if e.File != "/etc/edgeseal/edgeseal.yaml" {
				t.Errorf("file = %q", e.File)
			}
			if tc.line != 0 && e.Line != tc.line {
				t.Errorf("line = %d, want %d (%v)", e.Line, tc.line, err)
			}
			if e.Field != tc.field {
				t.Errorf("field = %q, want %q (%v)", e.Field, tc.field, err)
			}
			if !strings.Contains(e.Msg, tc.msg) {
				t.Errorf("message %q lacks %q", e.Msg, tc.msg)
			}
		})
	}
}

func TestValidConfigsAreAccepted(t *testing.T) {
	docs := map[string]string{
		"EdgeX layout":           "vault:\n  kv_version: 1\n  secret_prefix: edgex\n",
		"IPv6 listen":            "vault:\n  listen: '[::1]:8200'\n",
		"none with consent":      "seal:\n  method: none\n  allow_insecure_none: true\n",
		"tpm2 on swtpm":          "seal:\n  method: tpm2\n  tpm2:\n    device: 'swtpm:127.0.0.1:2321'\n    pcrs: [0, 7]\n",
		"services with groups":   "services:\n  - name: app-one\n    shared_read: [telemetry]\n  - name: collector\n    shared_write: [telemetry]\n",
		"extra names IP and DNS": "pki:\n  extra_names: [vault.local, 10.0.0.1, 'fe80::1']\n  intermediate: true\n",
	}
	for name, doc := range docs {
		if _, err := Parse("e.yaml", []byte(doc)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestOversizeInputIsRefusedBeforeParsing(t *testing.T) {
	_, err := Parse("big.yaml", make([]byte, MaxSize+1))
	if err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("err = %v", err)
	}
}

func TestLoadNamesAMissingFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "absent.yaml")
	_, err := Load(p)
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), p) {
		t.Errorf("err = %v", err)
	}
}

func TestVaultAddr(t *testing.T) {
	cases := map[string]string{
		"127.0.0.1:8200": "https://127.0.0.1:8200",
		"0.0.0.0:8300":   "https://127.0.0.1:8300",
		"[::1]:8200":     "https://[::1]:8200",
		"[::]:8200":      "https://127.0.0.1:8200",
	}
	for listen, want := range cases {
		c := Default()
		c.Vault.Listen = listen
		if got := c.VaultAddr(); got != want {
			t.Errorf("%s: %s, want %s", listen, got, want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(Sample)
	f.Add([]byte("vault:\n  kv_version: 3\n"))
	f.Add([]byte("services:\n  - name: a\n    shared_read: [g]\n"))
	f.Add([]byte("vault: {watch_interval: [1]}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, err := Parse("f.yaml", data)
		var e *Error
		if err != nil && !errors.As(err, &e) {
			t.Fatalf("error is %T, not *Error: %v", err, err)
		}
	})
}
