#!/usr/bin/env bash
# `make spread`: spread itself runs spread.yaml's suites on a real virtual
# machine (the vm backend: tests/vm/vm.sh boots tests/vm/build-image.sh's Debian
# 12 image under qemu, with a TPM and AppArmor enforcing).
#
#   tests/vm/spread.sh                       every suite: spread vm:debian-12-64
#   tests/vm/spread.sh vm:debian-12-64:tests/spread/boot-chain/
#   tests/vm/spread.sh -debug vm:debian-12-64:tests/spread/tokens/
#
# In order: spread from its pinned source (tests/lib/build-spread.sh), the image
# (cached; about 15 minutes cold without KVM), the install tree the project
# prepare unpacks (tests/vm/build-install.sh), then spread. The VMs spread
# allocates keep their state under a directory of this run, and every one still
# running when this script ends is stopped, also when spread fails or is
# interrupted. Each step's time is printed; the serial consoles' logs stay in
# that directory.
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
image=$(tests/vm/build-image.sh)
took "VM image $image"
tests/vm/build-install.sh > /dev/null
took "install tree build/vm/edgeseal-install.tar"

mkdir -p "$cache/vm-runs"
runs=$(mktemp -d "$cache/vm-runs/spread.XXXXXX")
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

args=("$@")
if [ ${#args[@]} -eq 0 ]; then
	args=(vm:debian-12-64)
fi
status=0
"$spread" -v "${args[@]}" || status=$?
took "spread ${args[*]}"
exit "$status"
