#!/usr/bin/env bash
# `make spread`: spread itself runs spread.yaml's suites on a real virtual
# machine (the vm backend: tests/vm/vm.sh boots tests/vm/build-image.sh's Debian
# 12 image under qemu, with a TPM and AppArmor enforcing).
#
#   tests/vm/spread.sh                       every suite: spread vm:debian-12-64
#   tests/vm/spread.sh vm:debian-12-64:tests/spread/boot-chain/
#   tests/vm/spread.sh -debug vm:debian-12-64:tests/spread/tokens/
#   tests/vm/spread.sh vm:ubuntu-24.04-64    every suite on Ubuntu 24.04 (`make
#                                            spread-ubuntu`; only when asked)
#
# With no argument only Debian's VM runs (make test's, CI's); the image of each
# system the arguments name (vm: alone names both) is built first.
#
# In order: spread from its pinned source (tests/lib/build-spread.sh), the image
# (cached; about 15 minutes cold without KVM), the install tree the project
# prepare unpacks (tests/vm/build-install.sh), then spread. The VMs spread
# allocates keep their state under a directory of this run (made in
# $EDGESEAL_VM_RUNS if set, else ~/.cache/edgeseal/vm-runs), and every one still
# running when this script ends is stopped, also when spread fails or is
# interrupted. Each step's time is printed; the serial consoles' logs stay in
# that directory. spread is stopped after EDGESEAL_SPREAD_TIMEOUT (default 40m).
set -euo pipefail

here=$(cd "$(dirname "$0")/../.." && pwd)
cd "$here"
cache=${EDGESEAL_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edgeseal}

say() { echo "spread.sh: $*" >&2; }
t0=$(date +%s)
lap=$t0
took() {
	local now
	now=$(date +%s)
	say "$1: $((now - lap)) s"
	lap=$now
}

spread=$(tests/lib/build-spread.sh)
took "spread $spread"
args=("$@")
if [ ${#args[@]} -eq 0 ]; then
	args=(vm:debian-12-64)
fi
systems=()
for arg in "${args[@]}"; do
	case "$arg" in
	vm | vm:) systems+=(debian-12-64 ubuntu-24.04-64) ;;
	vm:debian-12-64 | vm:debian-12-64:*) systems+=(debian-12-64) ;;
	vm:ubuntu-24.04-64 | vm:ubuntu-24.04-64:*) systems+=(ubuntu-24.04-64) ;;
	vm:*) say "the vm backend has no system ${arg#vm:} (debian-12-64, ubuntu-24.04-64)"; exit 1 ;;
	esac
done
if [ ${#systems[@]} -eq 0 ]; then
	systems=(debian-12-64)
fi
# shellcheck disable=SC2207 # system names have no spaces
systems=($(printf '%s\n' "${systems[@]}" | sort -u))
for system in "${systems[@]}"; do
	image=$(tests/vm/build-image.sh "$system")
	took "VM image of $system $image"
done
tests/vm/build-install.sh > /dev/null
took "install tree build/vm/edgeseal-install.tar"

mkdir -p "${EDGESEAL_VM_RUNS:-$cache/vm-runs}"
runs=$(mktemp -d "${EDGESEAL_VM_RUNS:-$cache/vm-runs}/spread.XXXXXX")
export EDGESEAL_VM_RUNS=$runs
# shellcheck disable=SC2317 # called by the EXIT trap
stop_all() {
	local state
	for state in "$runs"/*/; do
		if [ -e "$state/port" ] && [ -e "$state/overlay.qcow2" ]; then
			say "stopping the VM left in $state"
			tests/vm/vm.sh stop "${state%/}" || true
		fi
	done
	say "serial consoles of this run's VMs: $runs/*/serial.log"
	say "total: $(($(date +%s) - t0)) s"
}
trap stop_all EXIT
trap 'exit 130' INT TERM

# A bound on spread as a whole: a machine that stops answering mid-task must
# fail this run with its logs, not hang until CI's own limit ends it with none.
# Every task together takes about 11 minutes under TCG on a quiet 2-core
# machine.
bound=${EDGESEAL_SPREAD_TIMEOUT:-40m}
status=0
timeout --foreground -s INT -k 120 "$bound" "$spread" -v "${args[@]}" || status=$?
took "spread ${args[*]}"
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
	say "spread did not end within $bound (EDGESEAL_SPREAD_TIMEOUT); the last lines of each VM's serial console:"
	for log in "$runs"/*/serial.log; do
		[ -e "$log" ] && { echo "== $log"; tail -n 30 "$log"; } >&2
	done
fi
exit "$status"
