#!/usr/bin/env bash
# Makes snapd work without the store inside the test bed's systemd container
# (systemd-nspawn --volatile over the host's /usr, ../shared/testbed.md): device
# nodes for loop mounts, the /var tree the snapd package ships (empty under
# --volatile), udevd for snapd's `udevadm control --reload-rules`, snapd itself,
# and local stand-ins for the two snaps snapd would otherwise fetch from the
# store: the `bare` and `core24` bases and the `snapd` snap. Then `snap install --dangerous`
# works offline. Idempotent; run as root inside the container.
set -euo pipefail

[ -e /dev/loop-control ] || mknod -m 0660 /dev/loop-control c 10 237
for i in $(seq 0 15); do
	[ -e "/dev/loop$i" ] || mknod -m 0660 "/dev/loop$i" b 7 "$i"
done

mkdir -p /var/lib/snapd/apparmor/snap-confine /var/lib/snapd/auto-import \
	/var/lib/snapd/desktop /var/lib/snapd/environment /var/lib/snapd/firstboot \
	/var/lib/snapd/inhibit /var/lib/snapd/lib/gl /var/lib/snapd/lib/gl32 \
	/var/lib/snapd/lib/vulkan /var/lib/snapd/snaps/partial /var/lib/snapd/void \
	/var/cache/snapd /var/snap /etc/systemd/system
chmod 0111 /var/lib/snapd/void

if ! systemctl is-active -q systemd-udevd.service edgeseal-test-udevd.service; then
	systemd-run --quiet --unit=edgeseal-test-udevd /lib/systemd/systemd-udevd
fi
systemctl start snapd.socket snapd.service
snap wait system seed.loaded

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# standin_base NAME DESCRIPTION [EXTRA_DIR...] installs an empty base named
# NAME: the directories snap-confine mounts the host's onto, and no files.
# Enough for edgeseal's snaps, whose binaries are all static.
standin_base() {
	local name=$1 description=$2 d
	shift 2
	if snap list "$name" >/dev/null 2>&1; then
		return 0
	fi
	mkdir -p "$work/$name/meta"
	for d in bin dev etc home lib lib64 media mnt proc root run snap sys tmp usr/bin usr/lib/snapd \
		usr/src var/lib/snapd var/log var/snap var/tmp lib/modules lib/firmware "$@"; do
		mkdir -p "$work/$name/$d"
	done
	cat >"$work/$name/meta/snap.yaml" <<YAML
name: $name
version: '1.0'
type: base
summary: Stand-in for the $name base (test bed, no store)
description: $description
YAML
	snap pack "$work/$name" "$work" >/dev/null
	snap install --dangerous "$work/${name}"_*.snap
}
# The consumer snap's base.
standin_base bare "Empty directories, as the store's bare base."
# edgeseal's: core24 has a /boot, where system-observe binds the host's (see
# snap/snapcraft.yaml).
standin_base core24 "Empty directories where core24 has its Ubuntu 24.04 root, as snap-confine needs them." boot
if ! snap list snapd >/dev/null 2>&1; then
	mkdir -p "$work/snapd/meta" "$work/snapd/usr/lib/snapd"
	cp /usr/lib/snapd/info "$work/snapd/usr/lib/snapd/info"
	# Where the kernel enforces AppArmor, snapd derives the profile of the
	# snapd snap's snap-confine from the one the snap carries: the host's.
	for profile in /etc/apparmor.d/usr.lib.snapd.snap-confine.real /etc/apparmor.d/usr.lib.snapd.snap-confine; do
		if [ -f "$profile" ]; then
			install -D -m 0644 "$profile" "$work/snapd/etc/apparmor.d/usr.lib.snapd.snap-confine"
			break
		fi
	done
	version=$(sed -n 's/^VERSION=//p' /usr/lib/snapd/info)
	cat >"$work/snapd/meta/snap.yaml" <<YAML
name: snapd
version: '${version%%-*}'
type: snapd
summary: Stand-in for the snapd snap (test bed, no store)
description: Only snapd's info file; the host's snapd does the work.
YAML
	snap pack "$work/snapd" "$work" >/dev/null
	snap install --dangerous "$work"/snapd_*.snap
fi
