#!/usr/bin/env bash
# Builds spread (https://github.com/canonical/spread, GPL-3.0), the tool that runs
# spread.yaml's suites on whole machines, from its pinned source into a cache
# outside the repository, and prints the path of the binary. Rebuilds only when
# the binary for this pin is missing.
#
# spread is not on the Go module proxy, so the source comes from one of, in this
# order:
#   1. EDGESEAL_SPREAD_SRC: a source tarball (.tar.gz) of the pinned commit; it
#      must match the pinned SHA-256;
#   2. ../shared/third_party/spread-$short-src.tar.gz beside the project (the copy
#      this workplace keeps), or beside the main checkout when the project is a
#      git worktree, with the same check;
#   3. a clone of the pinned commit from upstream, checked against the pin (a
#      machine with internet).
# The script says which it used. spread's dependencies come from the module proxy.
#
# --path prints where the binary is (or will be) and builds nothing.
set -euo pipefail
# A pinned build of its own, made with the machine's Go, not with the release
# the Makefile picks for edgeseal's own binaries (EDGESEAL_GOTOOLCHAIN).
if [ -n "${EDGESEAL_GOTOOLCHAIN:-}" ] && [ "${GOTOOLCHAIN:-}" = "$EDGESEAL_GOTOOLCHAIN" ]; then
	unset GOTOOLCHAIN
fi

commit=32cad07bfd7fffb395f6c6134b68b1c24f9490c0
short=${commit:0:7}
tarball_sha256=a2a6d20be7e3758a9bbe1c84a3073fb82d68df0b39aee5aee6f39b9fafa5e1a8
upstream=https://github.com/canonical/spread

here=$(cd "$(dirname "$0")/../.." && pwd)
cache=${EDGESEAL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edgeseal}
dir=$cache/spread-$short
bin=$dir/spread
if [ "${1:-}" = --path ]; then
	echo "$bin"
	exit 0
fi

# The binary is moved into place only after a whole build; its commit is beside it.
if [ -x "$bin" ] && [ "$(cat "$dir/commit" 2>/dev/null)" = "$commit" ]; then
	echo "$bin"
	exit 0
fi

src=${EDGESEAL_SPREAD_SRC:-}
if [ -z "$src" ]; then
	main=$(git -C "$here" rev-parse --path-format=absolute --git-common-dir 2>/dev/null) || main=
	for top in "$here" ${main:+"$(dirname "$main")"}; do
		if [ -f "$top/../shared/third_party/spread-$short-src.tar.gz" ]; then
			src=$(cd "$top/../shared/third_party" && pwd)/spread-$short-src.tar.gz
			break
		fi
	done
fi

mkdir -p "$dir"
work=$dir/src
rm -rf "$work" "$work.tmp"
mkdir -p "$work.tmp"
if [ -n "$src" ]; then
	if [ ! -f "$src" ]; then
		echo "build-spread: cannot read source tarball $src: no such file (expected spread commit $commit, sha256 $tarball_sha256)" >&2
		exit 1
	fi
	got=$(sha256sum "$src" | cut -d' ' -f1)
	if [ "$got" != "$tarball_sha256" ]; then
		echo "build-spread: source tarball $src has sha256 $got, expected $tarball_sha256 (spread commit $commit); refusing to build it" >&2
		exit 1
	fi
	echo "build-spread: building spread $short from the local source tarball $src (sha256 verified)" >&2
	tar -xzf "$src" -C "$work.tmp"
else
	echo "build-spread: no local source tarball; cloning $upstream at commit $commit" >&2
	git init --quiet "$work.tmp"
	git -C "$work.tmp" fetch --quiet --depth 1 "$upstream" "$commit" >&2
	git -C "$work.tmp" checkout --quiet FETCH_HEAD
	got=$(git -C "$work.tmp" rev-parse HEAD)
	if [ "$got" != "$commit" ]; then
		echo "build-spread: upstream gave commit $got, expected $commit; refusing to build it" >&2
		exit 1
	fi
	echo "build-spread: building spread $short from upstream commit $commit" >&2
fi
# A tarball may or may not have a top directory.
if [ ! -f "$work.tmp/go.mod" ]; then
	top=$(find "$work.tmp" -mindepth 2 -maxdepth 2 -name go.mod -printf '%h\n' | head -1)
	[ -n "$top" ] || { echo "build-spread: the source has no go.mod at its top" >&2; exit 1; }
	mv "$top" "$work"
	rm -rf "$work.tmp"
else
	mv "$work.tmp" "$work"
fi

echo "build-spread: go build ./cmd/spread in $work (about a minute)" >&2
(
	cd "$work"
	CGO_ENABLED=0 go build -trimpath -o "$bin.tmp" ./cmd/spread >&2
)
mv "$bin.tmp" "$bin"
echo "$commit" > "$dir/commit"
rm -rf "$work"
echo "$bin"
