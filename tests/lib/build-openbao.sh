#!/usr/bin/env bash
# Builds OpenBao (`bao`, MPL-2.0), the server edgeseal ships and tests first, from
# its pinned source into a cache outside the repository, and prints the path of the
# binary. Rebuilds only when the binary for this pin is missing or does not report
# the pinned version.
#
# OpenBao is not on the Go module proxy (its v2 tags carry no /v2 module path), so
# the source comes from one of, in this order:
#   1. EDGESEAL_OPENBAO_SRC: a source tarball (.tar.xz or .tar.gz) of the pinned
#      tag; it must match the pinned SHA-256;
#   2. ../shared/third_party/openbao-v$version-src.tar.xz beside the project (the
#      copy this workplace keeps), with the same check;
#   3. a clone of the pinned tag from upstream, checked against the pinned commit
#      (a machine with internet).
# The script says which it used. The dependencies of OpenBao come from the module
# proxy. snap/snapcraft.yaml's openbao part pins the same tag and commit.
#
# --path prints where the binary is (or will be) and builds nothing.
set -euo pipefail
# A pinned build of its own, made with the machine's Go, not with the release
# the Makefile picks for edgeseal's own binaries (EDGESEAL_GOTOOLCHAIN).
if [ -n "${EDGESEAL_GOTOOLCHAIN:-}" ] && [ "${GOTOOLCHAIN:-}" = "$EDGESEAL_GOTOOLCHAIN" ]; then
	unset GOTOOLCHAIN
fi

version=2.4.1
commit=efb9efa12f550e8322f3cec040862355e966f565
tarball_sha256=e47436f0d05abcfa3ccf961bfe4e2d0683322eb72b0e49d2386383146e530c5b
upstream=https://github.com/openbao/openbao

here=$(cd "$(dirname "$0")/../.." && pwd)
cache=${EDGESEAL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edgeseal}
dir=$cache/openbao-v$version
bin=$dir/bao
if [ "${1:-}" = --path ]; then
	echo "$bin"
	exit 0
fi

if [ -x "$bin" ] && "$bin" version 2>/dev/null | grep -q "^OpenBao v$version "; then
	echo "$bin"
	exit 0
fi

src=${EDGESEAL_OPENBAO_SRC:-}
if [ -z "$src" ] && [ -f "$here/../shared/third_party/openbao-v$version-src.tar.xz" ]; then
	src=$here/../shared/third_party/openbao-v$version-src.tar.xz
fi

mkdir -p "$dir"
work=$dir/src
rm -rf "$work" "$work.tmp"
mkdir -p "$work.tmp"
if [ -n "$src" ]; then
	if [ ! -f "$src" ]; then
		echo "build-openbao: cannot read source tarball $src: no such file (expected OpenBao v$version source, sha256 $tarball_sha256)" >&2
		exit 1
	fi
	got=$(sha256sum "$src" | cut -d' ' -f1)
	if [ "$got" != "$tarball_sha256" ]; then
		echo "build-openbao: source tarball $src has sha256 $got, expected $tarball_sha256 (OpenBao v$version); refusing to build it" >&2
		exit 1
	fi
	echo "build-openbao: building OpenBao v$version from the local source tarball $src (sha256 verified)" >&2
	case "$src" in
	*.tar.xz) tar -xJf "$src" -C "$work.tmp" ;;
	*) tar -xzf "$src" -C "$work.tmp" ;;
	esac
else
	echo "build-openbao: no local source tarball; cloning $upstream tag v$version" >&2
	git clone --quiet --depth 1 --branch "v$version" "$upstream" "$work.tmp" >&2
	got=$(git -C "$work.tmp" rev-parse HEAD)
	if [ "$got" != "$commit" ]; then
		echo "build-openbao: upstream tag v$version is commit $got, expected $commit; refusing to build it" >&2
		exit 1
	fi
	echo "build-openbao: building OpenBao v$version from upstream commit $commit" >&2
fi
# A tarball may or may not have a top directory.
if [ ! -f "$work.tmp/go.mod" ]; then
	top=$(find "$work.tmp" -mindepth 2 -maxdepth 2 -name go.mod -printf '%h\n' | head -1)
	[ -n "$top" ] || { echo "build-openbao: the source has no go.mod at its top" >&2; exit 1; }
	mv "$top" "$work"
	rm -rf "$work.tmp"
else
	mv "$work.tmp" "$work"
fi

echo "build-openbao: go build in $work (20 to 30 minutes from an empty module cache)" >&2
(
	cd "$work"
	CGO_ENABLED=0 go build -trimpath \
		-ldflags "-s -w -X github.com/openbao/openbao/version.fullVersion=$version -X github.com/openbao/openbao/version.GitCommit=$commit" \
		-o "$bin.tmp" . >&2
)
mv "$bin.tmp" "$bin"
rm -rf "$work"
"$bin" version >&2
echo "$bin"
