#!/usr/bin/env bash
# Runs every fuzz target of the module for a while each (default 20s): the parsers
# of untrusted input (config, sealed blobs, token requests, LoadCredential=
# addresses, cgroup files) must never panic. `make test` runs it briefly.
set -euo pipefail
time=${1:-20s}
cd "$(dirname "$0")/../.."
n=0
for pkg in $(go list ./...); do
	targets=$(go test -list '^Fuzz' "$pkg") || { echo "fuzz-all: cannot list the fuzz targets of $pkg" >&2; exit 1; }
	for target in $(grep '^Fuzz' <<<"$targets" || true); do
		echo "fuzz $pkg $target for $time"
		go test -run '^$' -fuzz "^${target}\$" -fuzztime "$time" "$pkg"
		n=$((n + 1))
	done
done
echo "fuzz-all: $n targets, $time each, no failure"
