#!/usr/bin/env bash
# Installs what edgeseal's test bed needs on a Debian 12 machine, and only what is
# missing: systemd-nspawn (a real systemd as PID 1 in a container), swtpm and
# tpm2-tools (a software TPM), apparmor (apparmor_parser checks profiles), fscrypt
# and e2fsprogs (encrypted directories), snapd and squashfs-tools (the snap),
# strace (each boot step's accesses, checked against its AppArmor profile), gdbus
# (a signal forged on the system bus by an unprivileged user), dbus-daemon (a
# bus of a test's own, for the watch on failed units), qemu-system-x86,
# qemu-utils and debootstrap (`make spread`: the Debian VM image of
# tests/vm/build-image.sh, booted with swtpm as its TPM), softhsm2 (a software
# PKCS#11 token for seal.method pkcs11) and gcc (the cgo helper edgeseal-pkcs11).
set -euo pipefail

pkgs=(systemd-container swtpm swtpm-tools tpm2-tools apparmor squashfs-tools snapd fscrypt e2fsprogs util-linux iproute2 strace libglib2.0-bin dbus-daemon qemu-system-x86 qemu-utils debootstrap softhsm2 gcc libc6-dev)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "install-deps: missing Debian packages: ${missing[*]}; run as root: apt-get install ${missing[*]}" >&2
		exit 1
	fi
	echo "install-deps: installing ${missing[*]}" >&2
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Go release edgeseal needs is one fact: the go line of go.mod.
need=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$(dirname "$0")/../../go.mod")
command -v go >/dev/null || { echo "install-deps: go is not on PATH (Go $need or later is needed, as go.mod says)" >&2; exit 1; }
# The machine's own Go (GOTOOLCHAIN=local): the Makefile builds edgeseal
# with a newer release it fetches (EDGESEAL_GOTOOLCHAIN), but the servers and
# spread are built with this one, and this one fetches that.
have=$(GOTOOLCHAIN=local go env GOVERSION | sed 's/^go//')
if [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -n1)" != "$need" ]; then
	echo "install-deps: go on PATH is Go $have; go.mod needs Go $need or later" >&2
	exit 1
fi
