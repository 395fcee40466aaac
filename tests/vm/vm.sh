#!/usr/bin/env bash
# Boots and stops the virtual machines edgeseal's spread suites run on: the
# Debian 12 image of tests/vm/build-image.sh, under qemu (KVM when /dev/kvm is
# usable, else TCG, software emulation), with
#   - a TPM 2.0: swtpm behind qemu's tpm-crb, so the guest kernel has /dev/tpm0
#     and /dev/tpmrm0 (its resource manager); swtpm's state lives as long as the
#     VM, so the TPM keeps its seeds across the guest's reboots;
#   - a qcow2 overlay over the image, so the image stays clean;
#   - SSH forwarded from a free port on 127.0.0.1 to the guest's port 22;
#   - the serial console in a log;
#   - with --vault-disk SIZE, a second, blank virtual disk for the file vaults,
#     /dev/disk/by-id/virtio-edgeseal-vaults in the guest.
#
#   vm.sh start [--vault-disk SIZE]   boots a VM; prints its address, 127.0.0.1:PORT
#   vm.sh stop ADDRESS|STATE          stops it and removes its overlay, disks and TPM
#   vm.sh ssh ADDRESS|STATE [CMD...]  a root shell (or CMD) in it, with the image's key
#   vm.sh run [--vault-disk SIZE] -- CMD...
#                                     boots a VM, runs CMD on this machine with
#                                     EDGESEAL_VM_ADDRESS, EDGESEAL_VM_STATE and
#                                     EDGESEAL_VM_PASSWORD set, then stops it, also
#                                     when CMD fails or is interrupted
#
# Each VM's state is a directory $EDGESEAL_VM_RUNS/<port> (default
# ~/.cache/edgeseal/vm-runs): overlay.qcow2, tpm/, vaults.raw, serial.log,
# qemu.log, qemu.pid, root.password. stop kills qemu by the pid in its pidfile
# (checked to be that VM's qemu) and keeps only the two logs.
#
# root's password, which spread logs in with, is set by start over SSH with the
# image's key: EDGESEAL_VM_PASSWORD, else the one spread gives an adhoc
# backend's allocate script (SPREAD_SYSTEM_PASSWORD, SPREAD_PASSWORD), else a
# random one; it is kept in the state directory (root's only).
#
# Settings: EDGESEAL_VM_IMAGE (an image directory; default: build-image.sh's,
# built if missing), EDGESEAL_VM_MEMORY (MiB, 2048), EDGESEAL_VM_CPUS (2),
# EDGESEAL_VM_BOOT_TIMEOUT (seconds until SSH answers, 240).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${EDGESEAL_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edgeseal}
runs=${EDGESEAL_VM_RUNS:-$cache/vm-runs}
memory=${EDGESEAL_VM_MEMORY:-2048}
cpus=${EDGESEAL_VM_CPUS:-2}
boot_timeout=${EDGESEAL_VM_BOOT_TIMEOUT:-240}

say() { echo "vm: $*" >&2; }
die() {
	say "$*"
	exit 1
}

need_tools() {
	local missing=() tool
	for tool in qemu-system-x86_64:qemu-system-x86 qemu-img:qemu-utils swtpm:swtpm ssh:openssh-client ss:iproute2; do
		command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
	done
	if [ ${#missing[@]} -gt 0 ]; then
		die "cannot boot a VM without the Debian packages ${missing[*]}: apt-get install ${missing[*]} (or tests/lib/install-deps.sh)"
	fi
}

image_dir() {
	if [ -n "${EDGESEAL_VM_IMAGE:-}" ]; then
		echo "$EDGESEAL_VM_IMAGE"
	else
		"$here/build-image.sh"
	fi
}

# state_of ADDRESS|STATE prints the state directory of a VM.
state_of() {
	case "$1" in
	*/*) echo "$1" ;;
	*:*) echo "$runs/${1##*:}" ;;
	*) die "not a VM address (127.0.0.1:PORT) or state directory: $1" ;;
	esac
}

# vm_ssh STATE [CMD...]: root in the VM, with the image's key; at most
# probe_timeout seconds if that is set.
vm_ssh() {
	local state=$1
	shift
	timeout "${probe_timeout:-0}" ssh -i "$(cat "$state/image")/id_ed25519" -p "$(cat "$state/port")" \
		-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \
		-o BatchMode=yes -o IdentitiesOnly=yes -o ConnectTimeout=10 \
		root@127.0.0.1 "$@"
}

# qemu_pid STATE prints the pid of the VM's qemu if it still runs (and is that
# VM's: a pid in a stale pidfile may be another process's by now).
qemu_pid() {
	local state=$1 pid
	pid=$(cat "$state/qemu.pid" 2>/dev/null) || return 1
	[ -n "$pid" ] && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q "qemu-system.*$state/overlay.qcow2" || return 1
	echo "$pid"
}

swtpm_pid() {
	local state=$1 pid
	pid=$(cat "$state/tpm/pid" 2>/dev/null) || return 1
	[ -n "$pid" ] && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q "swtpm.*$state/tpm" || return 1
	echo "$pid"
}

stop_vm() {
	local state=$1 pid
	[ -d "$state" ] || return 0
	if pid=$(qemu_pid "$state"); then
		kill "$pid" 2>/dev/null || true
		for _ in $(seq 50); do
			[ -d "/proc/$pid" ] || break
			sleep 0.2
		done
		if [ -d "/proc/$pid" ]; then
			kill -9 "$pid" 2>/dev/null || true
		fi
	fi
	# swtpm ends when qemu closes its socket; one that did not start qemu may not.
	if pid=$(swtpm_pid "$state"); then
		kill "$pid" 2>/dev/null || true
	fi
	rm -rf "$state/overlay.qcow2" "$state/vaults.raw" "$state/tpm" "$state/root.password"
}

free_port() {
	local port
	for _ in $(seq 50); do
		port=$((20000 + RANDOM % 30000))
		if ! ss -Htln "sport = :$port" | grep -q . && [ ! -e "$runs/$port" ]; then
			echo "$port"
			return 0
		fi
	done
	die "cannot find a free TCP port on 127.0.0.1"
}

# start_vm VAULT_DISK: boots a VM; sets state to its state directory first
# thing, so that the caller's trap stops what did start.
start_vm() {
	local vault_disk=$1 img port accel pid waited password started
	need_tools
	img=$(image_dir)
	for f in disk.raw vmlinuz initrd.img cmdline id_ed25519; do
		[ -s "$img/$f" ] || die "the image in $img has no $f: build it with tests/vm/build-image.sh"
	done
	mkdir -p "$runs"
	# Logs of VMs stopped more than a day ago.
	find "$runs" -mindepth 1 -maxdepth 1 -type d -mtime +1 ! -exec test -e '{}/overlay.qcow2' ';' -exec rm -rf '{}' + 2>/dev/null || true

	port=$(free_port)
	state=$runs/$port
	mkdir -p "$state/tpm"
	echo "$img" > "$state/image"
	echo "$port" > "$state/port"
	: > "$state/serial.log"
	qemu-img create -q -f qcow2 -b "$img/disk.raw" -F raw "$state/overlay.qcow2"
	# Explicit devices, in order: the root disk is the first virtio disk
	# (/dev/vda), whatever else is attached.
	local disks=(-drive "file=$state/overlay.qcow2,if=none,id=root,format=qcow2"
		-device "virtio-blk-pci,drive=root,serial=edgeseal-root")
	if [ -n "$vault_disk" ]; then
		truncate -s "$vault_disk" "$state/vaults.raw"
		disks+=(-drive "file=$state/vaults.raw,if=none,id=vaults,format=raw"
			-device "virtio-blk-pci,drive=vaults,serial=edgeseal-vaults")
	fi

	accel=(-accel tcg)
	if [ -w /dev/kvm ]; then
		accel=(-accel kvm -cpu host)
	fi

	# swtpm daemonizes into /: every path absolute (a relative state directory
	# fails as "Could not open lockfile", which qemu only reports as CMD_INIT
	# failing).
	swtpm socket --tpm2 --tpmstate "dir=$state/tpm" \
		--ctrl "type=unixio,path=$state/tpm/sock" \
		--log "file=$state/tpm/log" --pid "file=$state/tpm/pid" --daemon \
		< /dev/null >> "$state/qemu.log" 2>&1 ||
		die "cannot start swtpm (log: $state/tpm/log)"

	say "booting $img (${accel[1]}, ${cpus} CPUs, ${memory} MiB) with SSH on 127.0.0.1:$port; serial console: $state/serial.log"
	# qemu's own output goes to a file: a daemon holding the caller's stdout
	# open would keep spread's allocate script from ever ending.
	if ! qemu-system-x86_64 -name "edgeseal-vm-$port" "${accel[@]}" -smp "$cpus" -m "$memory" \
		-kernel "$img/vmlinuz" -initrd "$img/initrd.img" -append "$(cat "$img/cmdline")" \
		"${disks[@]}" \
		-netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$port-:22" -device virtio-net-pci,netdev=n0,romfile= \
		-chardev "socket,id=chrtpm,path=$state/tpm/sock" -tpmdev emulator,id=tpm0,chardev=chrtpm \
		-device tpm-crb,tpmdev=tpm0 \
		-object rng-random,filename=/dev/urandom,id=rng0 -device virtio-rng-pci,rng=rng0 \
		-serial "file:$state/serial.log" -display none -monitor none \
		-daemonize -pidfile "$state/qemu.pid" < /dev/null >> "$state/qemu.log" 2>&1; then
		cat "$state/qemu.log" >&2
		die "cannot start qemu (log above: $state/qemu.log)"
	fi

	# A probe is bounded on its own: before the guest's network is up, qemu
	# accepts the connection and ssh would wait for a banner for ever.
	started=$SECONDS
	until probe_timeout=20 vm_ssh "$state" true < /dev/null 2> /dev/null; do
		if ! pid=$(qemu_pid "$state"); then
			tail -n 40 "$state/serial.log" >&2 || true
			cat "$state/qemu.log" >&2
			die "qemu exited before the guest's SSH answered (serial console above: $state/serial.log; qemu's output: $state/qemu.log)"
		fi
		waited=$((SECONDS - started))
		if [ "$waited" -ge "$boot_timeout" ]; then
			say "the last lines of the serial console:"
			tail -n 40 "$state/serial.log" >&2 || true
			if ! grep -q 'Linux version' "$state/serial.log"; then
				die "no SSH on 127.0.0.1:$port after $boot_timeout s: the kernel printed nothing (qemu pid $pid; check $state/qemu.log)"
			elif ! grep -q 'login:' "$state/serial.log"; then
				die "no SSH on 127.0.0.1:$port after $boot_timeout s: the guest did not finish booting (serial console: $state/serial.log); EDGESEAL_VM_BOOT_TIMEOUT=SECONDS allows longer"
			fi
			die "no SSH on 127.0.0.1:$port after $boot_timeout s, though the guest booted: is ssh.service up? (serial console: $state/serial.log)"
		fi
		sleep 2
	done
	say "SSH answered $((SECONDS - started)) s after qemu started"

	password=${EDGESEAL_VM_PASSWORD:-${SPREAD_SYSTEM_PASSWORD:-${SPREAD_PASSWORD:-}}}
	if [ -z "$password" ]; then
		password=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
	fi
	(umask 077 && printf '%s\n' "$password" > "$state/root.password")
	printf 'root:%s\n' "$password" | vm_ssh "$state" chpasswd ||
		die "cannot set root's password in the VM"
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
start | run)
	vault_disk=
	while [ $# -gt 0 ]; do
		case "$1" in
		--vault-disk)
			vault_disk=${2:?--vault-disk needs a size}
			shift 2
			;;
		--)
			shift
			break
			;;
		*) die "unknown option $1" ;;
		esac
	done
	state=
	# Whatever happens from here, a VM that did not come up is stopped.
	trap '[ -z "$state" ] || stop_vm "$state"' EXIT
	trap 'exit 130' INT TERM
	start_vm "$vault_disk"
	if [ "$cmd" = start ]; then
		trap - EXIT
		echo "127.0.0.1:$(cat "$state/port")"
		exit 0
	fi
	[ $# -gt 0 ] || die "run needs a command: vm.sh run -- CMD..."
	EDGESEAL_VM_ADDRESS=127.0.0.1:$(cat "$state/port") EDGESEAL_VM_STATE=$state \
		EDGESEAL_VM_PASSWORD=$(cat "$state/root.password") "$@"
	;;
stop)
	[ $# -eq 1 ] || die "usage: vm.sh stop ADDRESS|STATE"
	stop_vm "$(state_of "$1")"
	;;
ssh)
	[ $# -ge 1 ] || die "usage: vm.sh ssh ADDRESS|STATE [CMD...]"
	state=$(state_of "$1")
	shift
	[ -s "$state/port" ] || die "no VM state in $state"
	vm_ssh "$state" "$@"
	;;
*)
	die "usage: vm.sh start [--vault-disk SIZE] | stop ADDRESS|STATE | ssh ADDRESS|STATE [CMD...] | run [--vault-disk SIZE] -- CMD..."
	;;
esac
