package tokenclient

import (
	"encoding/json"

	"github.com/hashicorp/vault/api"
)

// The wire protocol of /run/edgeseal/tokend.sock, version 1.
//
// A client connects, writes one Request as a single line of JSON ending in "\n"
// (at most MaxRequestSize bytes, within the provider's request deadline), and
// reads one Response, a single line of JSON, after which the provider closes the
// connection. One connection serves one request.
//
// systemd's LoadCredential= is the other form: PID 1 connects from an abstract
// address "@<hex>/unit/<unit>/<credential id>" and writes nothing; the provider
// answers with the bare token file content (Response.Token) and closes.
const (
	// ProtocolVersion is the V of requests and responses this package speaks.
	ProtocolVersion = 1
	// MaxRequestSize bounds one request line, newline included.
	MaxRequestSize = 1024
	// MaxResponseSize bounds one response line a client reads.
	MaxResponseSize = 64 << 10
	// DefaultSocket is where the provider listens on a device installed from units.
	DefaultSocket = "/run/edgeseal/tokend.sock"
)

// Request asks for the calling service's token.
type Request struct {
	// V is ProtocolVersion.
	V int `json:"v"`
	// Service optionally names the service the caller wants the token of; it is
	// needed only when the caller's identity matches more than one service. The
	// caller's identity must match one of that service's rules.
	Service string `json:"service,omitempty"`
	// Cert asks for a TLS certificate of the service too (services[].tls in
	// the config), in Response.TLS.
	Cert bool `json:"cert,omitempty"`
}

// Status values of a Response.
const (
	StatusOK         = "ok"          // Token holds the service's token
	StatusRefused    = "refused"     // the caller's identity is not allowed a token
	StatusBadRequest = "bad-request" // the request could not be parsed
	StatusSealed     = "sealed"      // Vault is sealed or not set up: try again later
	StatusOverloaded = "overloaded"  // too many requests in flight: try again later
	StatusError      = "error"       // the provider could not issue a token
)

// Response is the provider's one answer.
type Response struct {
	V      int    `json:"v"`
	Status string `json:"status"`
	// Error says what went wrong, for a person; empty when Status is ok.
	Error string `json:"error,omitempty"`
	// Identity is how the provider saw the caller, e.g.
	// "unit app-one.service (pid 812, uid 998, gid 998)": set on ok and refused.
	Identity string `json:"identity,omitempty"`
	// Service is the service whose token this is.
	Service string `json:"service,omitempty"`
	// VaultAddr and CACert tell the client where Vault is and which CA
	// certificate verifies it (for renewal and unwrapping).
	VaultAddr string `json:"vault_addr,omitempty"`
	CACert    string `json:"ca_cert,omitempty"`
	// Wrapped says Token is a response-wrapped token (Token.WrapInfo set): the
	// client unwraps it once, with sys/wrapping/unwrap, to get its token.
	Wrapped bool `json:"wrapped,omitempty"`
	// Token is Vault's token-create response: {"auth":{"client_token":...}} — the
	// format of an EdgeX secrets-token.json — or {"wrap_info":{...}} when wrapped.
	Token json.RawMessage `json:"token,omitempty"`
	// TLS is the service's certificate, when the request asked for one.
	TLS *Certificate `json:"tls,omitempty"`
}

// Secret decodes r.Token.
func (r *Response) Secret() (*api.Secret, error) {
	var s api.Secret
	if err := json.Unmarshal(r.Token, &s); err != nil {
		return nil, err
	}
	return &s, nil
}
