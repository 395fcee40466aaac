#!/usr/bin/env bash
# Boots and stops the virtual machines edgeseal's spread suites run on: the
# Debian 12 (or Ubuntu 24.04) image of tests/vm/build-image.sh, under qemu (KVM when a
# guest boots under it: kvm_boots; else TCG, software emulation), with
#   - a TPM 2.0: swtpm behind qemu's tpm-crb, so the guest kernel has /dev/tpm0
#     and /dev/tpmrm0 (its resource manager); swtpm's state lives as long as the
#     VM, so the TPM keeps its seeds across the guest's reboots;
#   - a qcow2 overlay over the image, so the image stays clean;
#   - SSH forwarded from a free port on 127.0.0.1 to the guest's port 22;
#   - the serial console in a log;
#   - with --vault-disk SIZE, a second, blank virtual disk for the file vaults,
#     /dev/disk/by-id/virtio-edgeseal-vaults in the guest.
#
#   vm.sh start [--system SYSTEM] [--vault-disk SIZE]
#                                     boots a VM; prints its address, 127.0.0.1:PORT;
#                                     SYSTEM: debian-12-64 (the default) or
#                                     ubuntu-24.04-64, build-image.sh's systems
#   vm.sh stop ADDRESS|STATE          stops it and removes its overlay, disks and TPM
#   vm.sh ssh ADDRESS|STATE [CMD...]  a root shell (or CMD) in it, with the image's key
#   vm.sh run [--system SYSTEM] [--vault-disk SIZE] -- CMD...
#                                     boots a VM, runs CMD on this machine with
#                                     EDGESEAL_VM_ADDRESS, EDGESEAL_VM_STATE and
#                                     EDGESEAL_VM_PASSWORD set, then stops it, also
#                                     when CMD fails or is interrupted
#   vm.sh cut ADDRESS|STATE           cuts its power: kill -9 of qemu, then of its
#                                     swtpm; overlay, disks and TPM state stay
#   vm.sh poweroff ADDRESS|STATE      shuts it down from inside (systemctl poweroff)
#                                     and waits until qemu ends; the state stays
#   vm.sh boot ADDRESS|STATE [--append KERNEL-ARGS]
#                                     boots a VM that is off (cut, or powered off
#                                     from inside) again: the same overlay, vault
#                                     disk, TPM state and port; KERNEL-ARGS are
#                                     added to the kernel command line of this boot
#
# Each VM's state is a directory $EDGESEAL_VM_RUNS/<port> (default
# ~/.cache/edgeseal/vm-runs): overlay.qcow2, tpm/, vaults.raw, serial.log
# (serial.prev.log: the boot before, after a boot), qemu.log, qemu.pid,
# root.password. stop and cut kill qemu by the pid in its
# pidfile (checked to be that VM's qemu); stop then keeps only the logs.
#
# What cut loses is what a power cut loses in the guest: its page cache and
# whatever qemu holds in memory, that is the writes the guest did not flush
# (qemu's default cache=writeback honours a flush with fdatasync on the host).
# What qemu already wrote to the overlay stays in the host's page cache: this
# is the guest losing power, not the host's disk losing its cache.
#
# root's password, which spread logs in with, is set by start over SSH with the
# image's key: EDGESEAL_VM_PASSWORD, else the one spread gives an adhoc
# backend's allocate script (SPREAD_SYSTEM_PASSWORD, SPREAD_PASSWORD), else a
# random one; it is kept in the state directory (root's only).
#
# Settings: EDGESEAL_VM_SYSTEM (the system when start has no --system:
# spread's allocate script passes its $SPREAD_SYSTEM), EDGESEAL_VM_IMAGE (an
# image directory, whatever the system; default: build-image.sh's image of the
# system, built if missing), EDGESEAL_VM_MEMORY (MiB, 2048), EDGESEAL_VM_CPUS (2),
# EDGESEAL_VM_BOOT_TIMEOUT (seconds until SSH answers, 240).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${EDGESEAL_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edgeseal}
runs=${EDGESEAL_VM_RUNS:-$cache/vm-runs}
memory=${EDGESEAL_VM_MEMORY:-2048}
cpus=${EDGESEAL_VM_CPUS:-2}
boot_timeout=${EDGESEAL_VM_BOOT_TIMEOUT:-240}
system=${EDGESEAL_VM_SYSTEM:-debian-12-64}

say() { echo "vm: $*" >&2; }

# KVM's CPU: the host's, less IA32_ARCH_CAPABILITIES, which nested KVM on
# some hosts cannot set (qemu aborts: "failed to set MSR 0x10a"); without
# it the guest kernel assumes the worst and mitigates, which costs the tests
# nothing they measure.
kvm_cpu=(-cpu host,-arch-capabilities)

# kvm_boots IMAGE tells whether KVM is usable here: /dev/kvm writable, and
# the image's kernel printing its first line under it within 20 s. A
# writable /dev/kvm is not enough: under nested virtualisation on some hosts
# a KVM guest never gets past the BIOS, and TCG (slower, but sure) is used.
# The answer is kept in the cache by kernel, qemu and CPU, so the probe runs
# once per machine; EDGESEAL_VM_ACCEL=kvm|tcg decides without it.
kvm_boots() {
	local img=$1 key verdict file=$cache/kvm-probe
	case ${EDGESEAL_VM_ACCEL:-} in
	kvm) return 0 ;;
	tcg) return 1 ;;
	esac
	[ -w /dev/kvm ] || return 1
	key="$(uname -r) | $(qemu-system-x86_64 --version | head -n1) | $(grep -m1 '^model name' /proc/cpuinfo) | $(sha256sum < "$img/vmlinuz" | cut -c1-16)"
	if [ -f "$file" ] && [ "$(head -n1 "$file")" = "$key" ]; then
		[ "$(sed -n 2p "$file")" = yes ]
		return
	fi
	verdict=no
	local dir pid i
	dir=$(mktemp -d)
	if qemu-system-x86_64 -accel kvm "${kvm_cpu[@]}" -m 256 -no-reboot \
		-kernel "$img/vmlinuz" -append "console=ttyS0 panic=-1" \
		-serial "file:$dir/serial" -display none -monitor none \
		-daemonize -pidfile "$dir/pid" < /dev/null > "$dir/out" 2>&1; then
		pid=$(cat "$dir/pid")
		for ((i = 0; i < 100; i++)); do
			if grep -a -q 'Linux version' "$dir/serial" 2> /dev/null; then
				verdict=yes
				break
			fi
			sleep 0.2
		done
		kill "$pid" 2> /dev/null || true
	fi
	rm -rf "$dir"
	printf '%s\n%s\n' "$key" "$verdict" > "$file.tmp" && mv "$file.tmp" "$file"
	say "KVM probe: the kernel $( [ $verdict = yes ] && echo booted || echo 'printed nothing in 20 s' ) under KVM; using $( [ $verdict = yes ] && echo KVM || echo TCG ) (kept in $file)"
	[ $verdict = yes ]
}
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
		"$here/build-image.sh" "$system"
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
	# --foreground: ssh stays in the caller's process group, so that a
	# timeout (or kill) around `vm.sh ssh` ends ssh too. A guest that stops
	# answering (a reboot under qemu's user networking leaves the host's end
	# of the connection open) ends ssh after a minute of keep-alives.
	timeout --foreground "${probe_timeout:-0}" ssh -i "$(cat "$state/image")/id_ed25519" -p "$(cat "$state/port")" \
		-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \
		-o BatchMode=yes -o IdentitiesOnly=yes -o ConnectTimeout=10 \
		-o ServerAliveInterval=15 -o ServerAliveCountMax=4 \
		root@127.0.0.1 "$@"
}

# qemu_pid STATE prints the pid of the VM's qemu if it still runs (and is that
# VM's: a pid in a stale pidfile may be another process's by now).
qemu_pid() {
	local state=$1 pid
	pid=$(cat "$state/qemu.pid" 2>/dev/null) || return 1
	[ -n "$pid" ] && tr '\0' ' ' 2>/dev/null < "/proc/$pid/cmdline" | grep -q "qemu-system.*$state/overlay.qcow2" || return 1
	echo "$pid"
}

swtpm_pid() {
	local state=$1 pid
	pid=$(cat "$state/tpm/pid" 2>/dev/null) || return 1
	[ -n "$pid" ] && tr '\0' ' ' 2>/dev/null < "/proc/$pid/cmdline" | grep -q "swtpm.*$state/tpm" || return 1
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
	local vault_disk=$1 img port
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
	echo "$system" > "$state/system"
	: > "$state/serial.log"
	qemu-img create -q -f qcow2 -b "$img/disk.raw" -F raw "$state/overlay.qcow2"
	if [ -n "$vault_disk" ]; then
		truncate -s "$vault_disk" "$state/vaults.raw"
	fi
	launch_vm "$state" ""
	set_password "$state"
}

# boot_vm STATE KERNEL_ARGS: boots again a VM that is off, from what its state
# directory holds.
boot_vm() {
	local state=$1 append=$2 port
	need_tools
	[ -s "$state/overlay.qcow2" ] || die "no VM in $state: it was stopped (or never started)"
	if qemu_pid "$state" >/dev/null; then
		die "the VM of $state is running: cut or power it off first"
	fi
	port=$(cat "$state/port")
	# swtpm of a VM that did end: its qemu closed the socket, so it ends soon.
	wait_swtpm_gone "$state" || die "the swtpm of $state is still running"
	if ss -Htln "sport = :$port" | grep -q .; then
		die "cannot boot the VM of $state again: its port 127.0.0.1:$port is taken"
	fi
	# qemu truncates the console's log: the boot before (a cut's, say) is kept
	# beside it.
	mv -f "$state/serial.log" "$state/serial.prev.log" 2>/dev/null || true
	launch_vm "$state" "$append"
	if [ -s "$state/root.password" ]; then
		# A cut may have taken chpasswd's write with it.
		set_password "$state"
	fi
}

# launch_vm STATE KERNEL_ARGS: starts swtpm and qemu on the VM's overlay, TPM
# state, vault disk (if it has one) and port, and waits until its SSH answers.
launch_vm() {
	local state=$1 append=$2 img port accel pid waited started cmdline
	img=$(cat "$state/image")
	port=$(cat "$state/port")
	# Explicit devices, in order: the root disk is the first virtio disk
	# (/dev/vda), whatever else is attached.
	local disks=(-drive "file=$state/overlay.qcow2,if=none,id=root,format=qcow2"
		-device "virtio-blk-pci,drive=root,serial=edgeseal-root")
	if [ -e "$state/vaults.raw" ]; then
		disks+=(-drive "file=$state/vaults.raw,if=none,id=vaults,format=raw"
			-device "virtio-blk-pci,drive=vaults,serial=edgeseal-vaults")
	fi
	cmdline=$(cat "$img/cmdline")
	if [ -n "$append" ]; then
		cmdline="$cmdline $append"
	fi

	# TCG runs each vCPU in a host thread of its own (multi-threaded TCG), but
	# on Ubuntu 24.04's kernel (6.8) that crashed the guest once (a double
	# fault in __kmalloc_node under tar writing the project, the EFLAGS of the
	# frame garbage: an emulation fault, not the guest's; this host's qemu is
	# 7.2, and 8.1 fixed races of multi-threaded TCG, "accel/tcg: Always lock
	# pages before translation"). Its vCPUs share one host thread; Debian's
	# image, which never showed it, keeps the default.
	# EDGESEAL_VM_TCG_THREAD=single|multi chooses for any image.
	local tcg_thread=${EDGESEAL_VM_TCG_THREAD:-}
	if [ -z "$tcg_thread" ] && [ "$(cat "$state/system" 2>/dev/null)" = ubuntu-24.04-64 ]; then
		tcg_thread=single
	fi
	accel=(-accel "tcg${tcg_thread:+,thread=$tcg_thread}")
	if kvm_boots "$img"; then
		accel=(-accel kvm "${kvm_cpu[@]}")
	fi

	# swtpm daemonizes into /: every path absolute (a relative state directory
	# fails as "Could not open lockfile", which qemu only reports as CMD_INIT
	# failing). The same --tpmstate on every boot: the TPM keeps its seeds.
	mkdir -p "$state/tpm"
	swtpm socket --tpm2 --tpmstate "dir=$state/tpm" \
		--ctrl "type=unixio,path=$state/tpm/sock" \
		--log "file=$state/tpm/log" --pid "file=$state/tpm/pid" --daemon \
		< /dev/null >> "$state/qemu.log" 2>&1 ||
		die "cannot start swtpm (log: $state/tpm/log)"

	say "booting $img (${accel[1]}, ${cpus} CPUs, ${memory} MiB) with SSH on 127.0.0.1:$port; serial console: $state/serial.log"
	# qemu's own output goes to a file: a daemon holding the caller's stdout
	# open would keep spread's allocate script from ever ending.
	if ! qemu-system-x86_64 -name "edgeseal-vm-$port" "${accel[@]}" -smp "$cpus" -m "$memory" \
		-kernel "$img/vmlinuz" -initrd "$img/initrd.img" -append "$cmdline" \
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
}

# set_password STATE sets root's password in the VM: the one in the state
# directory, else (the first time) EDGESEAL_VM_PASSWORD, spread's, or a random one.
set_password() {
	local state=$1 password
	if [ -s "$state/root.password" ]; then
		password=$(cat "$state/root.password")
	else
		password=${EDGESEAL_VM_PASSWORD:-${SPREAD_SYSTEM_PASSWORD:-${SPREAD_PASSWORD:-}}}
		if [ -z "$password" ]; then
			password=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
		fi
		(umask 077 && printf '%s\n' "$password" > "$state/root.password")
	fi
	printf 'root:%s\n' "$password" | vm_ssh "$state" chpasswd ||
		die "cannot set root's password in the VM"
}

# cut_vm STATE: the VM's power cut, kill -9 of its qemu, and waits until qemu
# and its swtpm are gone; the overlay, vault disk and TPM state stay.
cut_vm() {
	local state=$1 pid
	if pid=$(qemu_pid "$state"); then
		kill -9 "$pid" 2>/dev/null || true
		# Gone, or a zombie (no cmdline) whose parent has yet to reap it: its
		# files, the overlay among them, are closed either way.
		for _ in $(seq 150); do
			qemu_pid "$state" >/dev/null || break
			sleep 0.2
		done
		if qemu_pid "$state" >/dev/null; then
			die "qemu (pid $pid) of $state is still there 30 s after kill -9"
		fi
	fi
	# The TPM loses power with the machine: swtpm (which may outlive its
	# client a while) is killed too, with no chance to save its volatile
	# state; what the TPM made persistent is already in its state files.
	if pid=$(swtpm_pid "$state"); then
		kill -9 "$pid" 2>/dev/null || true
	fi
	wait_swtpm_gone "$state" || die "swtpm of $state does not end"
}

# poweroff_vm STATE: a clean shutdown, from inside; waits (120 s at most)
# until qemu has ended, then its swtpm.
poweroff_vm() {
	local state=$1
	# Not `systemctl poweroff` itself: under qemu's user networking the host's
	# end of the SSH connection may never hear that the guest went down (see
	# spread.yaml's vm backend); this returns at once and powers off a second later.
	probe_timeout=60 vm_ssh "$state" systemd-run --quiet --on-active=1 \
		--timer-property=AccuracySec=100ms systemctl poweroff < /dev/null ||
		die "cannot power the VM of $state off (SSH failed)"
	for _ in $(seq 600); do
		qemu_pid "$state" >/dev/null || break
		sleep 0.2
	done
	if qemu_pid "$state" >/dev/null; then
		tail -n 20 "$state/serial.log" >&2 || true
		die "the VM of $state is still running 120 s after it was told to power off (serial console above)"
	fi
	wait_swtpm_gone "$state" || die "swtpm of $state still runs after its VM powered off"
}

# wait_swtpm_gone STATE: waits (10 s at most) until the VM's swtpm has ended.
wait_swtpm_gone() {
	local state=$1
	for _ in $(seq 50); do
		swtpm_pid "$state" >/dev/null || return 0
		sleep 0.2
	done
	return 1
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
		--system)
			system=${2:?--system needs a system: debian-12-64 or ubuntu-24.04-64}
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
cut | poweroff)
	[ $# -eq 1 ] || die "usage: vm.sh $cmd ADDRESS|STATE"
	state=$(state_of "$1")
	[ -s "$state/port" ] || die "no VM state in $state"
	qemu_pid "$state" >/dev/null || die "the VM of $state is not running"
	"${cmd}_vm" "$state"
	;;
boot)
	[ $# -ge 1 ] || die "usage: vm.sh boot ADDRESS|STATE [--append KERNEL-ARGS]"
	state=$(state_of "$1")
	shift
	append=
	while [ $# -gt 0 ]; do
		case "$1" in
		--append)
			append=${2:?--append needs kernel arguments}
			shift 2
			;;
		*) die "unknown option $1" ;;
		esac
	done
	[ -s "$state/port" ] || die "no VM state in $state"
	# A VM that did not come up is cut, not stopped: its state stays for the
	# caller to look at (serial.log) or to stop.
	booted=
	trap '[ -n "$booted" ] || cut_vm "$state"' EXIT
	trap 'exit 130' INT TERM
	boot_vm "$state" "$append"
	booted=1
	echo "127.0.0.1:$(cat "$state/port")"
	;;
*)
	die "usage: vm.sh start [--system SYSTEM] [--vault-disk SIZE] | stop ADDRESS|STATE | ssh ADDRESS|STATE [CMD...] | run [--system SYSTEM] [--vault-disk SIZE] -- CMD... | cut ADDRESS|STATE | poweroff ADDRESS|STATE | boot ADDRESS|STATE [--append KERNEL-ARGS]"
	;;
esac
