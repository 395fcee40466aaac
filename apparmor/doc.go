// Package apparmor holds the AppArmor profiles of edgeseal's confined steps
// (edgeseal-pki.in, edgeseal-unseal.in, edgeseal-tokend.in, edgeseal-vault.in,
// edgeseal-fsvault.in: profile sources whose @LIBEXECDIR@, @BINDIR@ and @VAULT@
// are replaced when installed)
// and a small reader of AppArmor profile text, so that tests can ask what a
// profile allows: which files with which permissions (allow rules minus deny
// rules, with AppArmor's globs and variables), which network families, which
// capabilities, which D-Bus messages.
//
// The reader covers the subset of the profile language those profiles use and
// refuses what it does not understand; apparmor_parser remains the judge of
// whether a profile compiles. docs/apparmor.md describes the profiles.
package apparmor
