#!/usr/bin/env bash
# Makes snapd work without the store inside the test bed's systemd container
# (systemd-nspawn --volatile over the host's /usr, ../shared/testbed.md): device
# nodes for loop mounts, the /var tree the snapd package ships (empty under
# --volatile), udevd for snapd's `udevadm control --reload-rules`, snapd itself,
# and local stand-ins for the two snaps snapd would otherwise fetch from the
# store: the `bare` base and the `snapd` snap. Then `snap install --dangerous`
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
if ! snap list bare >/dev/null 2>&1; then
	mkdir -p "$work/bare/meta"
	for d in bin dev etc home lib lib64 media mnt proc root run snap sys tmp usr/bin usr/lib/snapd \
		usr/src var/lib/snapd var/log var/snap var/tmp lib/modules lib/firmware; do
		mkdir -p "$work/bare/$d"
	done
	cat >"$work/bare/meta/snap.yaml" <<'YAML'
name: bare
version: '1.0'
type: base
summary: Stand-in for the bare base (test bed, no store)
description: Empty directories, as the store's bare base.
YAML
	snap pack "$work/bare" "$work" >/dev/null
	snap install --dangerous "$work"/bare_*.snap
fi
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
