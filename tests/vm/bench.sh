#!/usr/bin/env bash
# `make bench`'s figures on a real kernel: edgeseal's boot chain in the Debian 12
# VM of tests/vm (tests/vm/vm.sh: qemu, KVM when a guest boots under it, else TCG;
# swtpm behind tpm-crb as the guest's /dev/tpmrm0; AppArmor enforcing), built
# from this tree as a release (tests/vm/build-install.sh). It measures
#
#   1. the VM's boot: qemu's start to the guest's SSH answering (vm.sh's figure,
#      whole seconds), and the guest's own boot as systemd-analyze counts it;
#   2. the chain's cold first boot: `systemctl start edgeseal.target` on a device
#      that never booted edgeseal (seal.method tpm2, the kernel's TPM), from
#      edgeseal-pki's start to edgeseal.target active, and each unit's part;
#   3. the warm reboot: the guest rebooted with edgeseal.target enabled, from
#      the kernel's start and from edgeseal-pki's start to edgeseal.target active.
#
# Each figure is taken N times (EDGESEAL_VM_BENCH_N, default 3) and printed as
# N, min/median/max in seconds, then the samples in the order taken: N VMs are
# booted, the first of which also takes the N cold boots (the device reset to
# never-booted between them: stopped, its state removed, the storage root key
# evicted from the TPM, the page cache dropped) and then the N reboots.
# The figures go to stdout, the progress to stderr.
#
# Settings: EDGESEAL_VM_BENCH_N (3); EDGESEAL_VM_BENCH_TIMEOUT (seconds, 600):
# the bound of every wait (a chain's start, a reboot, a boot's end); the VMs'
# own (vm.sh): EDGESEAL_VM_MEMORY, EDGESEAL_VM_CPUS, EDGESEAL_VM_BOOT_TIMEOUT.
# The VMs' state is in a directory of this run below EDGESEAL_VM_RUNS
# (~/.cache/edgeseal/vm-runs); every VM still running when this script ends is
# stopped, also when it fails or is interrupted. On a failure, the guest's
# journal of edgeseal's units is printed and the exit status is 1.
set -euo pipefail

here=$(cd "$(dirname "$0")/../.." && pwd)
vm=$here/tests/vm/vm.sh
cache=${EDGESEAL_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edgeseal}
n=${EDGESEAL_VM_BENCH_N:-3}
bound=${EDGESEAL_VM_BENCH_TIMEOUT:-600}

say() { echo "bench: $*" >&2; }
fail() {
	say "$*"
	exit 1
}

case "$n" in
'' | *[!0-9]* | 0) fail "EDGESEAL_VM_BENCH_N=$n: not a number of samples (1 or more)" ;;
esac
case "$bound" in
'' | *[!0-9]* | 0) fail "EDGESEAL_VM_BENCH_TIMEOUT=$bound: not a number of seconds" ;;
esac

# The guest's side: one SSH call per step (a connection costs seconds under
# TCG). Times are systemd's monotonic timestamps in µs, printed as key=value.
# shellcheck disable=SC2016 # expanded in the guest
guest_script='#!/bin/bash
# edgeseal VM bench, the guest side (written by tests/vm/bench.sh).
set -euo pipefail
export TPM2TOOLS_TCTI=device:/dev/tpmrm0

prop() { systemctl show -P "$2" "$1"; }

# boot BOUND: waits until the boot has finished (its jobs are done) and prints
# what systemd-analyze prints, from the same timestamps.
boot() {
	local state
	state=$(timeout "$1" systemctl is-system-running --wait) || true
	if [ "$(systemctl show -P FinishTimestampMonotonic)" = 0 ]; then
		echo "the boot did not finish within $1 s (state ${state:-unknown}); jobs left:" >&2
		systemctl list-jobs --no-pager >&2 || true
		exit 1
	fi
	echo "state=$state"
	echo "boot_id=$(cat /proc/sys/kernel/random/boot_id)"
	for p in KernelTimestampMonotonic InitRDTimestampMonotonic UserspaceTimestampMonotonic FinishTimestampMonotonic; do
		echo "$p=$(systemctl show -P "$p")"
	done
	echo "analyze=$(systemd-analyze time 2>&1 | head -n 1)"
}

# chain: the timestamps of the last start of each unit.
chain() {
	local u
	for u in pki:edgeseal-pki.service vault:edgeseal-vault.service unseal:edgeseal-unseal.service; do
		echo "${u%%:*}_start=$(prop "${u#*:}" InactiveExitTimestampMonotonic)"
		echo "${u%%:*}_ready=$(prop "${u#*:}" ActiveEnterTimestampMonotonic)"
	done
	echo "pki_exec=$(prop edgeseal-pki.service ExecMainStartTimestampMonotonic)"
	echo "target_ready=$(prop edgeseal.target ActiveEnterTimestampMonotonic)"
}

# reset: a device that never booted edgeseal (what a first boot makes removed).
reset() {
	systemctl stop edgeseal.target edgeseal-tokend.service edgeseal-tokend.socket \
		edgeseal-unseal.service edgeseal-vault.service edgeseal-pki.service
	systemctl reset-failed "edgeseal*" 2>/dev/null || true
	rm -rf /var/lib/edgeseal /var/lib/edgeseal-vault /var/lib/edgeseal-pki /var/lib/private/edgeseal-pki /run/edgeseal
	# The storage root key the first boot persisted in the TPM.
	if tpm2_getcap handles-persistent | grep -qi "0x81000001"; then
		tpm2_evictcontrol -Q -C o -c 0x81000001
	fi
	systemd-tmpfiles --create /usr/lib/tmpfiles.d/edgeseal.conf
	sync
	echo 3 > /proc/sys/vm/drop_caches
}

# monotonic_of MESSAGE_ID UNIT SINCE: the first such message of PID 1 in this
# boot at or after SINCE (monotonic µs), its time in µs. Not --after-cursor:
# with matches, journalctl 252 skips the first entry that matches.
monotonic_of() {
	journalctl -q --no-pager -b -o short-monotonic _PID=1 MESSAGE_ID="$1" UNIT="$2" |
		sed -n "s/^\[ *\([0-9]*\)\.\([0-9]\{6\}\)\].*/\1\2/p" | awk -v t="$3" "\$1 >= t { print; exit }"
}

# cold BOUND: resets, then starts edgeseal.target.
cold() {
	local since
	reset
	if ! timeout "$1" systemctl start edgeseal.target; then
		echo "edgeseal.target did not start within $1 s" >&2
		exit 1
	fi
	chain
	# Vault starts twice on a first boot (edgeseal-unseal restarts it with its
	# TCP listener): its first start, from the journal (unit starting, started).
	since=$(prop edgeseal-pki.service InactiveExitTimestampMonotonic)
	echo "vault_first_start=$(monotonic_of 7d4958e842da4a758f6c1cdc7b36dcc5 edgeseal-vault.service "$since")"
	echo "vault_first_ready=$(monotonic_of 39f53479d3a045ac8e11786248231fbf edgeseal-vault.service "$since")"
	test -s /var/lib/edgeseal/unseal-key.sealed
	grep -q "\"method\":\"tpm2\"" /var/lib/edgeseal/unseal-key.sealed
}

# warm BOUND: waits for edgeseal.target after a boot.
warm() {
	local deadline=$((SECONDS + $1))
	while [ "$SECONDS" -lt "$deadline" ]; do
		if systemctl is-active --quiet edgeseal.target; then
			chain
			echo "status=$(edgeseal status 2>&1 | head -n 1)"
			return 0
		fi
		if systemctl is-failed --quiet edgeseal-unseal.service edgeseal-vault.service edgeseal-pki.service; then
			break
		fi
		sleep 0.5
	done
	echo "edgeseal.target is not active $1 s after SSH answered:" >&2
	systemctl --no-pager list-units "edgeseal*" >&2 || true
	exit 1
}

info() {
	echo "kernel=$(uname -r)"
	echo "memory=$(awk "/^MemTotal:/ { printf \"%d\", \$2 / 1024 }" /proc/meminfo)"
	echo "cpus=$(nproc)"
	echo "os=$(. /etc/os-release && echo "$PRETTY_NAME")"
	echo "systemd=$(systemctl --version | head -n 1)"
	echo "bao=$(bao version)"
	echo "apparmor=$(cat /sys/module/apparmor/parameters/enabled)"
	echo "profiles=$(grep "^edgeseal" /sys/kernel/security/apparmor/profiles | sort | paste -sd " ")"
}

# denials: AppArmor denials of every boot the journal has.
denials() {
	journalctl -q --no-pager -o cat _TRANSPORT=kernel + _TRANSPORT=audit |
		grep -o "apparmor=\"DENIED\".*" | sed "s/ pid=[0-9]*//" | sort | uniq -c || true
}

"$@"
'

cd "$here"
mkdir -p "$cache/vm-runs"
runs=$(mktemp -d "${EDGESEAL_VM_RUNS:-$cache/vm-runs}/bench.XXXXXX")
export EDGESEAL_VM_RUNS=$runs
addr=
# shellcheck disable=SC2317 # called by the EXIT trap
on_exit() {
	local status=$? state
	if [ "$status" != 0 ] && [ -n "$addr" ]; then
		say "the guest's journal of edgeseal's units, this boot:"
		guest_ssh 60 journalctl --no-pager -q -b -u "edgeseal*" 2>&1 | tail -n 60 >&2 || true
	fi
	for state in "$runs"/*/; do
		if [ -e "$state/port" ] && [ -e "$state/overlay.qcow2" ]; then
			say "stopping the VM in $state"
			"$vm" stop "${state%/}" || true
		fi
	done
	say "serial consoles: $runs/*/serial.log"
}
trap on_exit EXIT
trap 'exit 130' INT TERM

# guest_ssh BOUND CMD...: `vm.sh ssh` in the VM, at most BOUND seconds, its
# output through a file. Not timeout(1) around vm.sh: vm.sh runs ssh under a
# timeout of its own, in a process group of its own, out of reach of the outer
# one; an ssh left so while the guest shut down lived 5 minutes, holding open
# the pipe of a command substitution. On the bound, that group is killed by its
# id (the children of this call's vm.sh), then vm.sh.
guest_ssh() {
	local bound=$1 pid out rc=0 deadline child
	shift
	out=$(mktemp "$runs/ssh.XXXXXX")
	"$vm" ssh "$addr" "$@" 0<&0 > "$out" &
	pid=$!
	deadline=$((SECONDS + bound))
	while kill -0 "$pid" 2> /dev/null; do
		if [ "$SECONDS" -ge "$deadline" ]; then
			for child in $(ps -o pid= --ppid "$pid"); do
				kill -KILL -- "-$child" 2> /dev/null || kill -KILL "$child" 2> /dev/null || true
			done
			kill -KILL "$pid" 2> /dev/null || true
			say "no answer from the guest within $bound s: $*"
			rc=124
			break
		fi
		sleep 0.2
	done
	if [ "$rc" = 0 ]; then
		wait "$pid" || rc=$?
	else
		wait "$pid" 2> /dev/null || true
	fi
	cat "$out"
	rm -f "$out"
	return "$rc"
}

# in_guest BOUND CMD...: the guest helper's CMD, at most BOUND seconds.
in_guest() {
	local bound=$1
	shift
	guest_ssh "$bound" /var/tmp/edgeseal-bench "$@"
}

# parse: key=value lines to the associative array r.
declare -A r
parse() {
	local k v
	r=()
	while IFS='=' read -r k v; do
		[ -n "$k" ] && r[$k]=$v
	done <<< "$1"
}

# need KEY...: the guest's answer has these timestamps (µs, not 0).
need() {
	local k
	for k; do
		case "${r[$k]:-}" in
		'' | 0 | *[!0-9]*) fail "the guest gave no timestamp $k: $(declare -p r)" ;;
		esac
	done
}

# secs FROM TO: µs to seconds.
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b - a) / 1e6 }'; }

# start_vm: boots a VM, sets addr, appends vm.sh's figure to ssh_s.
vm_info=
start_vm() {
	local log=$runs/start.log sshs
	if ! addr=$("$vm" start 2> "$log"); then
		cat "$log" >&2
		addr=
		fail "cannot boot a VM (vm.sh's output above)"
	fi
	cat "$log" >&2
	sshs=$(sed -n 's/.*SSH answered \([0-9]*\) s after qemu started.*/\1/p' "$log")
	[ -n "$sshs" ] || fail "vm.sh said nothing of when SSH answered (its output above)"
	ssh_s+=("$sshs")
	vm_info=$(sed -n 's/.*booting .* (\(.*\)) with SSH.*/\1/p' "$log")
	guest_ssh 120 'cat > /var/tmp/edgeseal-bench && chmod 0755 /var/tmp/edgeseal-bench' <<< "$guest_script" ||
		fail "cannot copy the bench's guest side to the VM"
}

# guest_boot KIND: the guest's boot as systemd-analyze counts it.
guest_boot() {
	local out
	out=$(in_guest "$bound" boot "$bound") || fail "the guest's boot did not finish (above)"
	parse "$out"
	need UserspaceTimestampMonotonic FinishTimestampMonotonic
	say "$1: ${r[analyze]} (${r[state]})"
	local k=${r[KernelTimestampMonotonic]} u=${r[UserspaceTimestampMonotonic]} f=${r[FinishTimestampMonotonic]}
	eval "$1_kernel+=(\"\$(secs $k $u)\")"
	eval "$1_user+=(\"\$(secs $u $f)\")"
	eval "$1_total+=(\"\$(secs $k $f)\")"
	boot_id=${r[boot_id]}
}

ssh_s=()
boot_kernel=() boot_user=() boot_total=()
reboot_kernel=() reboot_user=() reboot_total=()
cold_total=() cold_pki=() cold_vault=() cold_unseal=() cold_restart=()
warm_kernel=() warm_total=() warm_pki=() warm_vault=() warm_unseal=()

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
say "the install tree: make install's and OpenBao, a release build"
tar=$("$here/tests/vm/build-install.sh" "$here/build/vm/bench-install.tar")
commit=$(sed -n 's/^commit //p' "${tar%.tar}.txt")

for v in $(seq "$n"); do
	say "VM $v of $n"
	start_vm
	guest_boot boot
	if [ "$v" -gt 1 ]; then
		"$vm" stop "$addr"
		addr=
		continue
	fi

	say "installing edgeseal in the guest (AppArmor profiles in enforce mode, seal.method tpm2 on /dev/tpmrm0)"
	# shellcheck disable=SC2016 # expanded in the guest
	guest_ssh "$bound" 'set -e
		tar -C / --no-overwrite-dir -xf -
		systemd-sysusers /usr/lib/sysusers.d/edgeseal.conf
		systemd-tmpfiles --create /usr/lib/tmpfiles.d/edgeseal.conf
		systemctl daemon-reload
		apparmor_parser -r -W /etc/apparmor.d/edgeseal-*
		printf "seal:\n  method: tpm2\n" > /etc/edgeseal/edgeseal.yaml
		edgeseal config check /etc/edgeseal/edgeseal.yaml >/dev/null
		test -c /dev/tpmrm0' < "$tar" || fail "cannot install edgeseal in the guest"
	out=$(in_guest 60 info) || fail "cannot read the guest's details"
	parse "$out"
	declare -A guest
	for k in "${!r[@]}"; do guest[$k]=${r[$k]}; done
	for p in edgeseal-pki edgeseal-vault edgeseal-unseal edgeseal-tokend; do
		[[ " ${guest[profiles]} " == *" $p (enforce) "* ]] ||
			fail "AppArmor profile $p is not loaded in enforce mode in the guest: ${guest[profiles]}"
	done

	for s in $(seq "$n"); do
		say "cold first boot $s of $n"
		out=$(in_guest $((bound + 120)) cold "$bound") || fail "cold first boot $s failed"
		parse "$out"
		need pki_start pki_ready vault_start vault_ready unseal_start unseal_ready target_ready vault_first_start vault_first_ready
		cold_total+=("$(secs "${r[pki_start]}" "${r[target_ready]}")")
		cold_pki+=("$(secs "${r[pki_start]}" "${r[pki_ready]}")")
		cold_vault+=("$(secs "${r[vault_first_start]}" "${r[vault_first_ready]}")")
		cold_restart+=("$(secs "${r[vault_start]}" "${r[vault_ready]}")")
		cold_unseal+=("$(secs "${r[unseal_start]}" "${r[unseal_ready]}")")
		say "cold first boot $s: ${cold_total[-1]} s (pki ${cold_pki[-1]}, vault ${cold_vault[-1]}, unseal ${cold_unseal[-1]})"
	done

	guest_ssh 60 systemctl enable --quiet edgeseal.target || fail "cannot enable edgeseal.target"
	for s in $(seq "$n"); do
		say "warm reboot $s of $n"
		before=$boot_id
		# Not `reboot` over SSH: under qemu's user networking it can hang (spread.yaml's vm backend).
		guest_ssh 60 systemd-run --quiet --on-active=1 --timer-property=AccuracySec=100ms systemctl reboot ||
			fail "cannot reboot the guest"
		deadline=$((SECONDS + bound))
		while :; do
			now=$(guest_ssh 30 cat /proc/sys/kernel/random/boot_id 2> /dev/null) || now=
			[ -z "$now" ] || [ "$now" = "$before" ] || break
			[ "$SECONDS" -lt "$deadline" ] || fail "the guest did not come back within $bound s of its reboot (serial console: $runs/${addr##*:}/serial.log)"
			sleep 1
		done
		guest_boot reboot
		out=$(in_guest $((bound + 60)) warm "$bound") || fail "edgeseal.target did not come up after reboot $s"
		parse "$out"
		need pki_start pki_ready vault_start vault_ready unseal_start unseal_ready target_ready
		warm_kernel+=("$(secs 0 "${r[target_ready]}")")
		warm_total+=("$(secs "${r[pki_start]}" "${r[target_ready]}")")
		warm_pki+=("$(secs "${r[pki_start]}" "${r[pki_ready]}")")
		warm_vault+=("$(secs "${r[vault_start]}" "${r[vault_ready]}")")
		warm_unseal+=("$(secs "${r[unseal_start]}" "${r[unseal_ready]}")")
		say "warm reboot $s: ${warm_kernel[-1]} s from the kernel's start, ${warm_total[-1]} s from edgeseal-pki's (${r[status]})"
	done

	denied=$(in_guest 120 denials) || fail "cannot read the guest's journal"
	"$vm" stop "$addr"
	addr=
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

# row WHAT SAMPLES...: N, min/median/max and the samples, in seconds.
row() {
	local what=$1
	shift
	printf '%s\n' "$@" | sort -g | awk -v what="$what" -v samples="$*" '
		{ v[NR] = $1 }
		END {
			med = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
			k = split(samples, s, " ")
			line = ""
			for (i = 1; i <= k; i++) line = line sprintf(" %.1f", s[i])
			printf "  %-46s N=%d  %6.1f %6.1f %6.1f   (%s)\n", what, NR, v[1], med, v[NR], substr(line, 2)
		}'
}

cat <<EOF

edgeseal VM bench, $(date -u +%Y-%m-%d), commit $commit
machine: host $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1), $(nproc) CPUs, load average $load_start at the start, $load_end at the end
  VM: qemu $vm_info; guest ${guest[os]}, kernel ${guest[kernel]}, ${guest[cpus]} CPUs, ${guest[memory]} MiB, ${guest[systemd]}
  TPM: swtpm behind qemu's tpm-crb, the guest kernel's /dev/tpmrm0; AppArmor enforcing: ${guest[profiles]}
  server: ${guest[bao]}; release build (tests/vm/build-install.sh)
seconds: N, min median max   (samples in the order taken)

VM boot (N VMs booted)
$(row "qemu start to the guest's SSH answering" "${ssh_s[@]}")
$(row "guest boot, systemd-analyze total" "${boot_total[@]}")
$(row "  kernel and initrd" "${boot_kernel[@]}")
$(row "  userspace" "${boot_user[@]}")
cold first boot (systemctl start edgeseal.target, device reset in between)
$(row "edgeseal-pki start to edgeseal.target active" "${cold_total[@]}")
$(row "  edgeseal-pki" "${cold_pki[@]}")
$(row "  edgeseal-vault, first start" "${cold_vault[@]}")
$(row "  edgeseal-unseal" "${cold_unseal[@]}")
$(row "    edgeseal-vault restart within it" "${cold_restart[@]}")
warm reboot (edgeseal.target enabled)
$(row "kernel start to edgeseal.target active" "${warm_kernel[@]}")
$(row "edgeseal-pki start to edgeseal.target active" "${warm_total[@]}")
$(row "  edgeseal-pki" "${warm_pki[@]}")
$(row "  edgeseal-vault" "${warm_vault[@]}")
$(row "  edgeseal-unseal" "${warm_unseal[@]}")
$(row "guest boot, systemd-analyze total" "${reboot_total[@]}")
$(row "  kernel and initrd" "${reboot_kernel[@]}")
$(row "  userspace (edgeseal.target in it)" "${reboot_user[@]}")

Measured from, to:
  qemu start to SSH: vm.sh's figure, in whole seconds (SSH probed every 2 s).
  systemd-analyze: kernel and initrd = the kernel's start to systemd's start
    in the root filesystem (the sum of systemd-analyze's kernel and initrd;
    Debian's initrd runs no systemd, so it counts as kernel time there),
    userspace = from there to the boot's jobs done, total = both (the
    guest's Kernel/Userspace/FinishTimestampMonotonic, which systemd-analyze
    reads).
  units: systemd's InactiveExitTimestampMonotonic (start) to
    ActiveEnterTimestampMonotonic (active: pki exited, vault and unseal sent
    READY=1); the target's ActiveEnterTimestampMonotonic. A first boot's
    edgeseal-unseal initialises the server, seals the unseal key with the TPM,
    restarts the server with its TCP listener, unseals it and sets it up;
    "first start" is from the journal (unit starting, started).
  cold: the device reset to never-booted before each sample (units stopped,
    /var/lib/edgeseal, /var/lib/edgeseal-vault and /run/edgeseal removed, the
    storage root key evicted from the TPM, the page cache dropped), then
    edgeseal.target started on the booted, otherwise idle guest.
  warm: kernel start is the guest's monotonic clock's 0.
AppArmor denials in the guest's journal (every boot of the first VM):
$(if [ -n "$denied" ]; then echo "$denied"; else echo "  none"; fi)
EOF
