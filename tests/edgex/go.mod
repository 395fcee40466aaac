// The EdgeX client of tests/integration/edgex_test.go: EdgeX's own secret
// client (go-mod-secrets), in a module of its own so that EdgeX is no
// dependency of edgeseal.
module github.com/edgeseal/edgeseal/tests/edgex

go 1.26.0

require (
	github.com/edgexfoundry/go-mod-core-contracts/v4 v4.0.1
	github.com/edgexfoundry/go-mod-secrets/v4 v4.0.1
)

require (
	github.com/gabriel-vasile/mimetype v1.4.8 // indirect
	github.com/go-kit/log v0.2.1 // indirect
	github.com/go-logfmt/logfmt v0.5.1 // indirect
	github.com/go-playground/locales v0.14.1 // indirect
	github.com/go-playground/universal-translator v0.18.1 // indirect
	github.com/go-playground/validator/v10 v10.25.0 // indirect
	github.com/google/uuid v1.6.0 // indirect
	github.com/leodido/go-urn v1.4.0 // indirect
	golang.org/x/crypto v0.32.0 // indirect
	golang.org/x/net v0.34.0 // indirect
	golang.org/x/sys v0.29.0 // indirect
	golang.org/x/text v0.21.0 // indirect
)
