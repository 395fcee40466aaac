// Package apparmorrules is test tooling, not part of edgeseal: a small reader
// of AppArmor profile text, so that tests can ask what a profile allows: which
// files with which permissions (allow rules minus deny rules, with AppArmor's
// globs and variables), which network families, which capabilities, which
// D-Bus messages.
//
// Its tests check the profiles edgeseal ships (../../apparmor/*.in, installed
// by make install with @LIBEXECDIR@, @BINDIR@ and @VAULT@ replaced) against
// what each step needs and must not reach; the integration tests
// (tests/integration/apparmor_trace_test.go) check what a traced boot touches
// against the installed profiles.
//
// The reader covers the subset of the profile language those profiles use and
// refuses what it does not understand; apparmor_parser remains the judge of
// whether a profile compiles. docs/apparmor.md describes the profiles.
package apparmorrules
