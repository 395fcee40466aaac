// Package secretstore brings the Vault-compatible server from "just started" to
// "unsealed and set up": first-boot init with the unseal key sealed before anything
// depends on it, per-boot unseal, policies and token roles from config, the
// token-issuing token for the token provider, and re-unseal when Vault restarts.
// It talks to Vault only through package vaultclient, over TLS verified against the
// per-boot CA.
package secretstore
