#!/usr/bin/env bash
# Runs every fuzz target of the module for a while each (default 20s): the parsers
# of untrusted input (config, sealed blobs) must never panic.
set -euo pipefail
time=${1:-20s}
cd "$(dirname "$0")/../.."
for pkg in $(go list ./...); do
	for target in $(go test -list '^Fuzz' "$pkg" 2>/dev/null | grep '^Fuzz' || true); do
		echo "fuzz $pkg $target for $time"
		go test -run '^$' -fuzz "^${target}\$" -fuzztime "$time" "$pkg"
	done
done
