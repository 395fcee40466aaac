#!/usr/bin/env bash
# Builds what the project prepare of spread.yaml installs on the vm backend's
# machine, on this machine rather than in the guest (a Go build under TCG, qemu's
# software emulation, takes many times longer): `make install`'s tree (PREFIX=/usr,
# the units running /usr/bin/bao) and OpenBao v2.4.1 (tests/lib/build-openbao.sh)
# as /usr/bin/bao, in one uncompressed tar, by default
# build/vm/edgeseal-install.tar (git-ignored; spread sends it with the project,
# compressed, and the project prepare unpacks it at /), and, without OUT, the
# snaps of the snap suite in build/vm/snaps/. Prints the tar's path.
#
# /usr/bin/vault is a symbolic link to bao: the tasks call the server's CLI as
# `vault`, and bao reads VAULT_ADDR, VAULT_CACERT and VAULT_TOKEN.
#
# A release build (GOTAGS empty): the suites use no test hooks. GOTAGS=... in the
# environment builds with them.
set -euo pipefail

here=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-$here/build/vm/edgeseal-install.tar}

bao=$("$here/tests/lib/build-openbao.sh")
umask 022
tree=$(mktemp -d "${TMPDIR:-/tmp}/edgeseal-install.XXXXXX")
trap 'rm -rf "$tree"' EXIT
chmod 0755 "$tree"
make -s -C "$here" install DESTDIR="$tree" PREFIX=/usr VAULT=/usr/bin/bao GOTAGS="${GOTAGS:-}" >&2
install -m 0755 "$bao" "$tree/usr/bin/bao"
ln -s bao "$tree/usr/bin/vault"

mkdir -p "$(dirname "$out")"
# Only usr/ and etc/: the tar must not carry an entry for / itself.
tar --owner=0 --group=0 --numeric-owner --sort=name -C "$tree" -cf "$out.tmp" usr etc
mv "$out.tmp" "$out"
{
	echo "commit $(git -C "$here" rev-parse HEAD 2>/dev/null || echo unknown)$(git -C "$here" diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
	echo "gotags ${GOTAGS:-}"
	"$bao" version
} > "${out%.tar}.txt"
echo "build-install: $out ($(du -h "$out" | cut -f1)): make install's tree and $("$bao" version | head -1)" >&2

# The snaps of the snap suite, beside the default tree (spread's; not for
# another OUT, the bench's or the power-cut test's): edgeseal's (make snap,
# with the same OpenBao) and the test snaps (make test-snaps).
if [ $# -gt 0 ]; then
	echo "$out"
	exit 0
fi
snaps=$(dirname "$out")/snaps
rm -rf "$snaps"
make -s -C "$here" snap test-snaps SNAP_OUT="$snaps" SNAP_BAO="$bao" GOTAGS="${GOTAGS:-}" >&2
echo "$out"
