#!/usr/bin/env bash
# Builds the Debian 12 (bookworm) virtual machine image edgeseal's spread suites
# run on (tests/vm/launch.sh boots it; `make spread` does both), and prints the
# directory that holds it:
#
#   disk.raw        the root file system (ext4 labelled edgeseal-root, no partition table)
#   vmlinuz         Debian's kernel (linux-image-amd64, AppArmor on)
#   initrd.img      its initramfs
#   id_ed25519      a key root's authorized_keys accepts (the launcher's checks)
#   root.password   root's password over SSH (spread logs in only with a password:
#                   its SSH client offers nothing else, spread/client.go Dial)
#   cmdline         the kernel command line the image expects
#
# Everything comes from Debian's packages: debootstrap from the mirror this
# machine's apt uses (EDGESEAL_VM_MIRROR overrides it), then a few files written
# here. No loop mount: mkfs.ext4 -d copies the root into the image.
#
# The image is cached in ~/.cache/edgeseal/vm-<hash>/ (EDGESEAL_VM_CACHE for
# another directory), the hash taken over this script and the package list, so
# it is rebuilt only when the recipe changes. The debootstrap root, the slow part
# (about 15 minutes without KVM, most of it the kernel's initramfs), is cached on
# its own by the hash of its package list and mirror, so editing the files
# written below does not run debootstrap again.
#
# Needs root (debootstrap, and ownership kept in the image) and the Debian
# packages debootstrap and e2fsprogs (tests/lib/install-deps.sh installs them).
#
# {{ Ubuntu's image. Lines between these marks are Ubuntu's part of the recipe:
# Debian's hash (below) is taken over the script without them.
#
# The system to build is the first argument (or EDGESEAL_VM_SYSTEM): debian-12-64
# (the default, all said above) or ubuntu-24.04-64, Ubuntu 24.04 (noble) the same
# way: debootstrap from http://archive.ubuntu.com/ubuntu (EDGESEAL_VM_UBUNTU_MIRROR
# overrides it), components main and universe (swtpm, fscrypt), Ubuntu's own
# kernel (linux-image-virtual: virtio, tpm_crb and AppArmor built in, the
# modules the initramfs needs in linux-modules), checked with Ubuntu's archive
# key (the host's ubuntu-archive-keyring.gpg if it has one, else ubuntu-keyring
# from that mirror, pinned by its hash here); cached in
# ~/.cache/edgeseal/vm-ubuntu-24.04-64-<hash>/ and vm-base-ubuntu-24.04-64-<hash>/.
# Only noble's release pocket: the kernel and packages of 24.04's release, no
# updates (one suite is what debootstrap takes; the tests want a fixed machine).
#
#   build-image.sh [debian-12-64|ubuntu-24.04-64] [--path]
# }}
#   --path  prints the image directory without building anything
set -euo pipefail

suite=bookworm
size=4G
# What the suites use in the guest (tests/spread/**/task.yaml and spread.yaml's
# prepare): systemd with udev and D-Bus, SSH for spread, the kernel with
# AppArmor and its tools, tpm2-tools (TPM checks and quotes), swtpm (the tasks
# that start a software TPM on loopback, beside the qemu TPM at /dev/tpmrm0),
# fscrypt and e2fsprogs (file vaults), snapd and squashfs-tools (the snap),
# python3 (the helpers read token JSON with it), curl, procps, iproute2.
# debootstrap takes no alternatives: snapd's "default-dbus-session-bus |
# dbus-session-bus" is named here (dbus-user-session, with libpam-systemd).
packages=(
	systemd systemd-sysv udev dbus dbus-user-session libpam-systemd kmod
	linux-image-amd64
	openssh-server
	apparmor apparmor-utils
	iproute2 procps ca-certificates curl python3
	tpm2-tools swtpm swtpm-tools
	fscrypt e2fsprogs util-linux
	snapd squashfs-tools
)
# The root file system by its label: the launcher may attach more disks.
cmdline="root=LABEL=edgeseal-root rw console=ttyS0 apparmor=1 security=apparmor net.ifnames=0"
# {{
system=${EDGESEAL_VM_SYSTEM:-debian-12-64}
path_only=
for arg in "$@"; do
	case "$arg" in
	--path) path_only=--path ;;
	debian-12-64 | ubuntu-24.04-64) system=$arg ;;
	*)
		echo "build-image: unknown argument $arg: build-image.sh [debian-12-64|ubuntu-24.04-64] [--path]" >&2
		exit 1
		;;
	esac
done
set -- $path_only
case "$system" in
debian-12-64) ;;
ubuntu-24.04-64)
	suite=noble
	# Debian's list, but Ubuntu's kernel. linux-image-virtual is the generic
	# kernel (virtio, tpm_crb, AppArmor with D-Bus mediation, all built in)
	# without linux-modules-extra and linux-firmware, which a VM has no use for.
	# initramfs-tools is only the kernel's Recommends here (debootstrap leaves
	# those), and snapd's "fuse3 | fuse" is named as debootstrap takes no
	# alternatives. No netplan: minbase has none, and systemd-networkd is set
	# up below as on Debian.
	packages=(
		systemd systemd-sysv udev dbus dbus-user-session libpam-systemd kmod
		linux-image-virtual initramfs-tools
		openssh-server
		apparmor apparmor-utils
		iproute2 procps ca-certificates curl python3
		tpm2-tools swtpm swtpm-tools
		fscrypt e2fsprogs util-linux
		snapd squashfs-tools fuse3
	)
	;;
*)
	echo "build-image: no such system $system (EDGESEAL_VM_SYSTEM): debian-12-64 or ubuntu-24.04-64" >&2
	exit 1
	;;
esac
# }}

cache=${EDGESEAL_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edgeseal}

# The mirror apt uses here (deb822 sources or a one-line list), else Debian's.
mirror_from_apt() {
	local f
	for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -f "$f" ] || continue
		awk -v suite="$suite" '
			/^URIs:/ { uri = $2 }
			/^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite && uri ~ /\/debian\/?$/) { print uri; exit } }
			/^deb / { for (i = 2; i < NF; i++) if ($(i+1) == suite && $i ~ /\/debian\/?$/) { print $i; exit } }
		' "$f"
	done | head -1
}
mirror=${EDGESEAL_VM_MIRROR:-$(mirror_from_apt)}
mirror=${mirror:-http://deb.debian.org/debian}
# {{
if [ "$system" = ubuntu-24.04-64 ]; then
	mirror=${EDGESEAL_VM_UBUNTU_MIRROR:-http://archive.ubuntu.com/ubuntu}
fi
# }}

base_key=$(printf '%s\n' "$suite" "$mirror" "${packages[*]}" | sha256sum | cut -c1-12)
key=$({ cat "$0"; echo "$mirror"; } | sha256sum | cut -c1-12)
base=$cache/vm-base-$base_key
dir=$cache/vm-$key
# {{ Debian's recipe is this script without the marked blocks: its image keeps
# the hash (and the cache directory) it had before Ubuntu's were added. Ubuntu's
# is the whole script, its directories named by the system, which the clean-up
# of Debian's older images (vm-<hash> only) never takes.
if [ "$system" = debian-12-64 ]; then
	key=$({ sed '/^[[:space:]]*# {{/,/^[[:space:]]*# }}/d' "$0"; echo "$mirror"; } | sha256sum | cut -c1-12)
	dir=$cache/vm-$key
else
	base=$cache/vm-base-$system-$base_key
	dir=$cache/vm-$system-$key
fi
# }}

if [ "${1:-}" = --path ]; then
	echo "$dir"
	exit 0
fi
if [ -s "$dir/done" ]; then
	echo "$dir"
	exit 0
fi

if [ "$(id -u)" != 0 ]; then
	echo "build-image: building the VM image needs root (debootstrap); run as root, or give a built image with EDGESEAL_VM_CACHE" >&2
	exit 1
fi
for tool in debootstrap mkfs.ext4 ssh-keygen; do
	if ! command -v "$tool" >/dev/null; then
		echo "build-image: $tool is missing; install it: apt-get install debootstrap e2fsprogs openssh-client (or run tests/lib/install-deps.sh)" >&2
		exit 1
	fi
done
# {{ Ubuntu's Release file is checked with gpgv, its keyring fetched with wget
# (both debootstrap's own Recommends and Depends) and unpacked by dpkg-deb.
if [ "$system" = ubuntu-24.04-64 ]; then
	for tool in gpgv:gpgv wget:wget dpkg-deb:dpkg; do
		if ! command -v "${tool%%:*}" >/dev/null; then
			echo "build-image: ${tool%%:*} is missing, which Ubuntu's image needs; install it: apt-get install ${tool#*:}" >&2
			exit 1
		fi
	done
fi
# }}

start=$(date +%s)
if [ ! -e "$base/done" ]; then
	echo "build-image: debootstrap $suite from $mirror into $base (about 15 minutes without KVM)" >&2
	rm -rf "$base"
	mkdir -p "$base"
	# {{ Ubuntu's archive key, and the script debootstrap runs for noble: Debian
	# 12's debootstrap (1.0.128) has no script named noble, and takes the one
	# of every Ubuntu release since 7.10, gutsy, as its fourth argument.
	if [ "$system" = ubuntu-24.04-64 ]; then
		keyring=/usr/share/keyrings/ubuntu-archive-keyring.gpg
		if [ ! -s "$keyring" ]; then
			keyring=$base/ubuntu-archive-keyring.gpg
			deb=ubuntu-keyring_2023.11.28.1_all.deb
			if ! wget -q -O "$base/$deb" "$mirror/pool/main/u/ubuntu-keyring/$deb" ||
				! echo "36de43b15853ccae0028e9a767613770c704833f82586f28eb262f0311adb8a8  $base/$deb" | sha256sum -c --status; then
				echo "build-image: cannot fetch Ubuntu's keyring $deb (the one of noble, by its hash) from $mirror; install the host's (Debian's ubuntu-archive-keyring) instead" >&2
				exit 1
			fi
			dpkg-deb --fsys-tarfile "$base/$deb" | tar -xO ./usr/share/keyrings/ubuntu-archive-keyring.gpg > "$keyring"
		fi
		debootstrap() {
			command debootstrap --components=main,universe --keyring="$keyring" "$@" /usr/share/debootstrap/scripts/gutsy
		}
	fi
	# }}
	include=$(IFS=,; echo "${packages[*]}")
	if ! debootstrap --variant=minbase --include="$include" "$suite" "$base/root" "$mirror" > "$base/debootstrap.log" 2>&1; then
		tail -n 30 "$base/debootstrap.log" >&2
		echo "build-image: cannot debootstrap $suite from $mirror (log: $base/debootstrap.log)" >&2
		exit 1
	fi
	# Its package cache is not part of the image.
	rm -f "$base"/root/var/cache/apt/archives/*.deb
	date -u +%FT%TZ > "$base/done"
	echo "build-image: debootstrap took $(($(date +%s) - start)) s" >&2
fi

echo "build-image: making the image in $dir" >&2
work=$dir.tmp
rm -rf "$work"
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
root=$work/root
cp -a "$base/root" "$root"

# The machine: a name, its root disk, DHCP on qemu's user network.
echo edgeseal-vm > "$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tedgeseal-vm\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$root/etc/hosts"
printf 'LABEL=edgeseal-root\t/\text4\trw,errors=remount-ro\t0\t1\n' > "$root/etc/fstab"
# A fixed machine ID: an empty one would make every boot a first boot.
od -An -tx1 -N16 /dev/urandom | tr -d ' \n' > "$root/etc/machine-id"
echo >> "$root/etc/machine-id"
cat > "$root/etc/systemd/network/80-vm.network" <<'NETWORK'
[Match]
Name=eth* en*

[Network]
DHCP=ipv4
NETWORK
# qemu's user network answers DNS at 10.0.2.3.
rm -f "$root/etc/resolv.conf"
echo 'nameserver 10.0.2.3' > "$root/etc/resolv.conf"
chroot "$root" systemctl enable --quiet systemd-networkd.service
# Nothing in the image waits for the network, nor runs jobs of its own beside
# the tests (under TCG every CPU second counts).
for unit in systemd-networkd-wait-online.service apt-daily.timer apt-daily-upgrade.timer \
	e2scrub_all.timer e2scrub_reap.service fstrim.timer dpkg-db-backup.timer; do
	ln -sf /dev/null "$root/etc/systemd/system/$unit"
done
# snapd starts when first used (snapd.socket), not at every boot, where under
# TCG it took 20 CPU-seconds beside edgeseal's chain.
chroot "$root" systemctl disable --quiet snapd.service snapd.seeded.service
# {{ Ubuntu's own timer, which would fetch news from the network; and its SSH:
# on noble, ssh.socket listens (socket activation, sshd started per connection
# burst), not ssh.service, which the spread backend's reboot accounts for.
if [ "$system" = ubuntu-24.04-64 ]; then
	ln -sf /dev/null "$root/etc/systemd/system/motd-news.timer"
fi
# }}
# A journal that survives reboots, to read after a failed boot.
mkdir -p "$root/var/log/journal"
mkdir -p "$root/etc/systemd/journald.conf.d"
printf '[Journal]\nSystemMaxUse=64M\n' > "$root/etc/systemd/journald.conf.d/edgeseal-vm.conf"

# root over SSH: a key for the launcher (tests/vm/vm.sh), and a password for
# spread, whose SSH client knows no other way. The password is not in the
# image: root's is locked here, and the launcher sets the one spread chose for
# each run (spread gives it to the backend's allocate script).
ssh-keygen -q -t ed25519 -N '' -C edgeseal-vm -f "$work/id_ed25519"
install -d -m 0700 "$root/root/.ssh"
install -m 0600 "$work/id_ed25519.pub" "$root/root/.ssh/authorized_keys"
cat > "$root/etc/ssh/sshd_config.d/edgeseal-vm.conf" <<'SSHD'
# edgeseal's test VM (tests/vm/build-image.sh): spread logs in as root with a
# password; SSH is forwarded to 127.0.0.1 on the host only.
PermitRootLogin yes
PasswordAuthentication yes
UseDNS no
SSHD

echo "$cmdline" > "$work/cmdline"
kernels=("$root"/boot/vmlinuz-*)
initrds=("$root"/boot/initrd.img-*)
cp "${kernels[-1]}" "$work/vmlinuz"
cp "${initrds[-1]}" "$work/initrd.img"
# shellcheck disable=SC2016 # dpkg-query's format, not the shell's
chroot "$root" dpkg-query -W -f '${Package} ${Version}\n' > "$work/packages.txt"

rm -f "$work/disk.raw"
# {{ Every system's: mkfs.ext4 that creates its file says so on stdout, even
# with -q ("Creating regular file ..."), which then came before the image's
# directory in what this script prints (vm.sh's image_dir read both as the
# path on a cold build). The file made first, mkfs has nothing to say. No byte
# of the image changes, so Debian's hash may leave this out.
truncate -s "$size" "$work/disk.raw"
# }}
mkfs.ext4 -q -L edgeseal-root -d "$root" "$work/disk.raw" "$size"
rm -rf "$root"
echo "$(($(date +%s) - start))" > "$work/build-seconds"
date -u +%FT%TZ > "$work/done"
rm -rf "$dir"
mv "$work" "$dir"
trap - EXIT
echo "build-image: the image is ready in $dir ($(cat "$dir/build-seconds") s)" >&2
# {{ Ubuntu's images of older recipes (never Debian's), but one a VM runs on.
if [ "$system" != debian-12-64 ]; then
	for old in "$cache/vm-$system"-*; do
		[ "$old" != "$dir" ] || continue
		[[ $(basename "$old") =~ ^vm-$system-[0-9a-f]{12}$ ]] || continue
		in_use=false
		# A run's directory (spread.sh's) may itself be in one of EDGESEAL_VM_RUNS.
		for state in "$cache"/vm-runs/*/ "$cache"/vm-runs/*/*/ "$cache"/vm-runs/*/*/*/; do
			if [ -e "$state/overlay.qcow2" ] && grep -qsx "$old" "$state/image"; then
				in_use=true
			fi
		done
		$in_use || rm -rf "$old"
	done
	echo "$dir"
	exit 0
fi
# }}
# Images of older recipes, but one a VM still runs on (tests/vm/vm.sh keeps the
# image of each VM in its state directory).
for old in "$cache"/vm-[0-9a-f]*; do
	case "$old" in "$dir" | */vm-base-* | */vm-runs) continue ;; esac
	[[ $(basename "$old") =~ ^vm-[0-9a-f]{12}$ ]] || continue
	in_use=false
	for state in "$cache"/vm-runs/*/ "$cache"/vm-runs/*/*/; do
		if [ -e "$state/overlay.qcow2" ] && grep -qsx "$old" "$state/image"; then
			in_use=true
		fi
	done
	$in_use || rm -rf "$old"
done
echo "$dir"
