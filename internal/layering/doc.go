// Package layering holds no code, only the test that keeps edgeseal's
// packages layered (docs/architecture.md): commands over features over
// mechanisms over leaves, every import pointing down, nothing outside tests/
// importing test tooling, and every package placed. A new package fails the
// test until it is given its rank in the test's table.
package layering
