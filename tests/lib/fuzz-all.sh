#!/usr/bin/env bash
# Runs every fuzz target of the module for a while each (default 20s): the parsers
# of untrusted input (config, sealed blobs, token requests, LoadCredential=
# addresses, cgroup files, snap options, snapd's answers, AppArmor profiles) must never panic. `make test` runs it briefly.
set -euo pipefail
time=${1:-20s}
cd "$(dirname "$0")/../.."
n=0
for pkg in $(go list ./...); do
	targets=$(go test -list '^Fuzz' "$pkg") || { echo "fuzz-all: cannot list the fuzz targets of $pkg" >&2; exit 1; }
	for target in $(grep '^Fuzz' <<<"$targets" || true); do
		echo "fuzz $pkg $target for $time"
		# Go before 1.27 can fail a target at the end of -fuzztime with a bare
		# "context deadline exceeded" and no failing input (go.dev/issue/75804):
		# that one failure, and only it, is run again once.
		for try in 1 2; do
			if out=$(go test -run '^$' -fuzz "^${target}\$" -fuzztime "$time" "$pkg" 2>&1); then
				printf '%s\n' "$out"
				break
			fi
			printf '%s\n' "$out"
			if [ "$try" = 1 ] && grep -q 'context deadline exceeded' <<<"$out" &&
				! grep -qE 'Failing input written|panic:|fuzz: minimizing' <<<"$out"; then
				echo "fuzz-all: $target stopped on Go's fuzz-deadline race (no failing input); once more" >&2
				continue
			fi
			exit 1
		done
		n=$((n + 1))
	done
done
echo "fuzz-all: $n targets, $time each, no failure"
