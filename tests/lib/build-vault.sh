#!/usr/bin/env bash
# Builds HashiCorp Vault v1.21.0 from the Go module proxy into a cache outside the
# repository and prints the path of the binary. Rebuilds only when the binary is
# missing. Vault is not packaged in Debian; the test bed runs this build as its
# second server, after OpenBao (tests/lib/build-openbao.sh), which the snap
# ships and make install defaults to. v1.21.0 is pinned exactly: later patch
# releases do not build this way (their in-tree sdk matches no published vault/sdk version).
#
# --path prints where the binary is (or will be) and builds nothing.
set -euo pipefail
# A pinned build of its own, made with the machine's Go, not with the release
# the Makefile picks for edgeseal's own binaries (EDGESEAL_GOTOOLCHAIN).
if [ -n "${EDGESEAL_GOTOOLCHAIN:-}" ] && [ "${GOTOOLCHAIN:-}" = "$EDGESEAL_GOTOOLCHAIN" ]; then
	unset GOTOOLCHAIN
fi

version=v1.21.0
cache=${EDGESEAL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edgeseal}
bin=$cache/vault-$version/vault
if [ "${1:-}" = --path ]; then
	echo "$bin"
	exit 0
fi

if [ -x "$bin" ] && "$bin" version >/dev/null 2>&1; then
	echo "$bin"
	exit 0
fi

work=$cache/vault-$version/build
mkdir -p "$work"
cd "$work"
echo "building vault $version in $work (20+ minutes from an empty module cache)" >&2
if [ ! -f go.mod ]; then
	go mod init edgeseal.local/vaultbuild >&2
fi
cat > main.go <<'GO'
package main

import (
	"os"

	"github.com/hashicorp/vault/command"
)

func main() { os.Exit(command.Run(os.Args[1:])) }
GO
# Never `go mod tidy` here: it pulls test-only packages that do not resolve.
GOFLAGS=-mod=mod go get "github.com/hashicorp/vault@$version" >&2
CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$bin.tmp" . >&2
mv "$bin.tmp" "$bin"
"$bin" version >&2
echo "$bin"
