#!/usr/bin/env bash
# The power-cut test: edgeseal's boot chain loses power at a chosen step of a
# first boot and of a later boot, on a real (virtual) machine, and the next
# boot recovers with no secret lost.
#
# What it does. One Debian 12 VM (tests/vm/vm.sh: qemu, TCG or KVM, with a
# TPM 2.0 from swtpm at /dev/tpmrm0) gets edgeseal's install tree built with
# its test hooks (build-install.sh, GOTAGS=edgeseal_testhooks) and the config
# seal.method tpm2. For each step named below, edgeseal-unseal is made to stop
# at that step (EDGESEAL_PAUSE_AT, a test build's hook, which leaves a mark in
# /run/edgeseal and blocks); once the mark is there the VM's power is cut:
# qemu is killed with SIGKILL, no `sync` and no shutdown before. The VM then
# boots again from the same disk and the same TPM state (swtpm restarted on
# its state directory: the TPM keeps its seeds, as a real one would through a
# power cut) and, without anyone logging in, edgeseal.target must become
# active with OpenBao unsealed, the unseal key sealed before the cut still the
# one in use, and, on a later boot, the secret written before read back with
# the same value through a service's token.
#
# What a cut loses, and what it does not. kill -9 of qemu loses everything the
# guest had not handed to qemu's disk, as a power cut does: the guest's page
# cache (written files not yet written back, an ext4 journal not yet
# committed) and the TPM's volatile state. qemu's disks run with its default
# cache=writeback: a write qemu has done went into the host's page cache, and
# a flush the guest asks for (fsync, a journal commit) is an fdatasync on the
# host; what qemu held in its own memory (the qcow2 overlay's metadata for
# writes not yet flushed) is lost with it. The host itself keeps running, so
# what qemu did write stays in the host's page cache: this is the guest losing
# power with a disk that honours flushes, not a disk losing its write cache
# or tearing a sector.
#
# The steps (internal/secretstore/steps.go; EDGESEAL_POWERCUT_FIRST_BOOT and
# EDGESEAL_POWERCUT_LATER_BOOT, space-separated, choose others):
#   a first boot: each case starts from a device that never booted (edgeseal's
#     state removed, and that made durable), starts edgeseal.target with the
#     pause in a drop-in in /run/systemd/system (tmpfs: the cut takes it away,
#     the boot after runs as a device would), cuts, and boots again;
#   a later boot: from a device whose first boot completed and which holds a
#     secret, a clean shutdown, then a boot whose kernel command line has
#     systemd.setenv=EDGESEAL_PAUSE_AT=STEP (in the environment of every
#     service of that boot only: nothing on disk to remove after the cut, so
#     the boot after is untouched by the test), the cut, and a boot again.
#
# Run from the project's directory (or anywhere): tests/vm/powercut.sh. It
# needs what vm.sh needs (qemu, swtpm; it says what to install) and Go, and
# takes about 30 minutes under TCG on 2 CPUs (12 boots of 40 to 130 s each,
# with other VMs on the machine). Settings: EDGESEAL_VM_RUNS (the
# VMs' state, default ~/.cache/edgeseal/vm-runs/powercut),
# EDGESEAL_POWERCUT_RECOVER_TIMEOUT (seconds from power-on until
# edgeseal.target must be active, 300).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
project=$(cd "$here/../.." && pwd)
vm=$here/vm.sh
cache=${EDGESEAL_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edgeseal}
export EDGESEAL_VM_RUNS=${EDGESEAL_VM_RUNS:-$cache/vm-runs/powercut}
first_boot_steps=${EDGESEAL_POWERCUT_FIRST_BOOT:-init-marker-written vault-initialized key-sealed init-marker-removed issuing-token-written}
later_boot_steps=${EDGESEAL_POWERCUT_LATER_BOOT:-vault-unsealed old-tokens-revoked issuing-token-written}
recover_timeout=${EDGESEAL_POWERCUT_RECOVER_TIMEOUT:-300}
# From the start of edgeseal.target (or from SSH answering, on a later boot)
# to the pause mark: the chain up to the last step takes about 30 s under TCG.
pause_timeout=180
# Any one command in the guest; a first boot's full chain is the longest.
guest_timeout=300
vault_port=8200

started=$SECONDS
say() { printf 'powercut: %02d:%02d %s\n' $(((SECONDS - started) / 60)) $(((SECONDS - started) % 60)) "$*" >&2; }
die() {
	say "$*"
	exit 1
}

# The steps the unseal daemon knows, in boot order, from the source: a
# misspelt step would never pause, and the test would wait for nothing.
known_steps=$(sed -n 's/^\tStep[A-Za-z]* *Step = "\([a-z-]*\)"$/\1/p' "$project/internal/secretstore/steps.go")
[ -n "$known_steps" ] || die "cannot read the boot steps from internal/secretstore/steps.go"
for step in $first_boot_steps $later_boot_steps; do
	grep -qx -- "$step" <<< "$known_steps" ||
		die "unknown boot step $step; the steps are: $(tr '\n' ' ' <<< "$known_steps")"
done

# key_durable_at STEP: whether the unseal key sealed on this boot is durable at
# STEP: from key-sealed on.
key_durable_at() {
	sed -n '/^key-sealed$/,$p' <<< "$known_steps" | grep -qx -- "$1"
}

# The guest's side of the story: shell functions sent with each command (one
# SSH connection costs seconds under TCG: each command does a whole part).
guest_lib=$(cat <<'LIB'
set -u
vault() { VAULT_ADDR=https://127.0.0.1:__PORT__ VAULT_CACERT=/run/edgeseal/pki/ca.crt bao "$@"; }
chain_units="edgeseal.target edgeseal-ready.service edgeseal-tokend.service edgeseal-tokend.socket edgeseal-unseal.service edgeseal-vault.service edgeseal-pki.service"
# never_booted: edgeseal's state gone, durably, as on a device fresh from the
# factory: the next start of edgeseal.target is a first boot.
never_booted() {
	systemctl stop $chain_units
	rm -rf /run/systemd/system/edgeseal-unseal.service.d
	systemctl daemon-reload
	systemctl reset-failed $chain_units 2>/dev/null || true
	rm -rf /var/lib/edgeseal /var/lib/edgeseal-vault /var/lib/edgeseal-pki /var/lib/private/edgeseal-pki /run/edgeseal /tmp/powercut-collector
	systemd-tmpfiles --create /usr/lib/tmpfiles.d/edgeseal.conf
	systemctl start edgeseal-tokend.socket
	# The story starts from this state, not from what a cut could make of it.
	sync
}
# wait_paused STEP SECONDS: waits until edgeseal-unseal has paused at STEP
# (the test hook's mark).
wait_paused() {
	local i
	for i in $(seq "$2"); do
		[ ! -e "/run/edgeseal/.test-paused-at-$1" ] || return 0
		sleep 1
	done
	echo "edgeseal-unseal did not pause at $1 within $2 s" >&2
	return 1
}
# wait_target SECONDS: waits until edgeseal.target is active; fails at once if
# edgeseal-unseal failed for good (an exit status no retry cures).
wait_target() {
	local i
	for i in $(seq "$1"); do
		systemctl is-active --quiet edgeseal.target && return 0
		if systemctl is-failed --quiet edgeseal-unseal.service; then
			echo "edgeseal-unseal.service failed for good: $(systemctl show -P ExecMainStatus edgeseal-unseal.service) is an exit status no retry cures" >&2
			return 1
		fi
		sleep 1
	done
	echo "edgeseal.target is not active after $1 s more" >&2
	return 1
}
# service_token prints a new token of the service collector (uid 1001) from
# the token provider.
service_token() {
	setpriv --reuid=1001 --regid=1001 --clear-groups \
		edgeseal token fetch --quiet --out /tmp/powercut-collector/token.json &&
		python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["auth"]["client_token"])' /tmp/powercut-collector/token.json
}
# check_recovered KEY_SUM SECRET: OpenBao unsealed, edgeseal ready, the
# sealed key the one whose sha256 is KEY_SUM (if not empty) and no Vault set
# aside, a service's token from the provider that Vault accepts and that
# reads SECRET (if not empty; else finds no secret), and no AppArmor denial of
# edgeseal's profiles in this boot. Says what is wrong, if anything.
check_recovered() {
	local key_sum=$1 secret=$2 ok=0 token got denials
	if ! vault status -format=json | grep -q '"sealed": false'; then
		echo "OpenBao is not unsealed" >&2
		ok=1
	fi
	if ! edgeseal status | grep -q '^edgeseal: ready'; then
		echo "edgeseal status does not say ready: $(edgeseal status 2>&1 | head -n 1)" >&2
		ok=1
	fi
	if [ -n "$key_sum" ]; then
		got=$(sha256sum < /var/lib/edgeseal/unseal-key.sealed) || got="(none)"
		if [ "$got" != "$key_sum" ]; then
			echo "the sealed unseal key is not the one sealed before the cut ($got, was $key_sum): that key, and the Vault it opened, are lost" >&2
			ok=1
		fi
		if ls -d /var/lib/edgeseal-vault/*.abandoned-* 2>/dev/null; then
			echo "a Vault was set aside, though its key had been sealed before the cut" >&2
			ok=1
		fi
	fi
	if ! token=$(service_token); then
		echo "the token provider gives the service collector no token" >&2
		ok=1
	else
		got=$(VAULT_TOKEN=$token vault kv get -mount=secret -field=v edgeseal/collector/powercut 2>&1) || true
		if [ -n "$secret" ] && [ "$got" != "$secret" ]; then
			echo "the secret written before the cut reads back as \"$got\", not \"$secret\"" >&2
			ok=1
		elif [ -z "$secret" ] && ! echo "$got" | grep -q 'No value found'; then
			echo "Vault does not accept the service's token: $got" >&2
			ok=1
		fi
	fi
	denials=$(journalctl --no-pager -q -b -o cat _TRANSPORT=kernel _TRANSPORT=audit | grep 'apparmor="DENIED".*profile="edgeseal' || true)
	if [ -n "$denials" ]; then
		echo "edgeseal's AppArmor profiles denied in this boot:" >&2
		echo "$denials" >&2
		ok=1
	fi
	return $ok
}
LIB
)
guest_lib=${guest_lib//__PORT__/$vault_port}

# guest CMD runs a shell command in the VM, as root, bounded.
guest() {
	timeout "$guest_timeout" "$vm" ssh "$state" "$@" < /dev/null
}

# in_guest CMD: guest, with the functions above.
in_guest() {
	guest "$guest_lib
$1"
}

# diagnose prints what a person needs to see why a boot did not recover.
diagnose() {
	say "the journal of edgeseal's units in this boot (last 60 lines):"
	guest 'journalctl --no-pager -q -b -u "edgeseal*" | tail -n 60' >&2 || say "(no journal: SSH failed)"
	say "the kernel's AppArmor lines of this boot:"
	guest 'journalctl --no-pager -q -b _TRANSPORT=kernel _TRANSPORT=audit | grep "apparmor=" | tail -n 20' >&2 || true
	say "the serial console (last 30 lines, $state/serial.log):"
	tail -n 30 "$state/serial.log" >&2 || true
}

# pause_then_cut STEP: waits until edgeseal-unseal has paused at STEP, then
# cuts the power at once; sets key_sum to the sealed key's sha256, as the
# guest saw it (maybe only in its page cache), if the key is durable at STEP.
pause_then_cut() {
	local step=$1
	key_sum=
	if ! in_guest "wait_paused $step $pause_timeout"; then
		diagnose
		die "the chain never reached $step: cannot cut the power there"
	fi
	if key_durable_at "$step"; then
		key_sum=$(guest 'sha256sum < /var/lib/edgeseal/unseal-key.sealed') ||
			die "edgeseal-unseal paused at $step with no sealed key"
	fi
	# Nothing between the mark and the cut flushes the guest's disk but what
	# its kernel does in those seconds anyway.
	"$vm" cut "$state"
}

# recover_and_check STEP KEY_SUM SECRET: boots the VM again after the cut at
# STEP and waits until edgeseal.target is active, within recover_timeout of
# the power coming back, then checks (check_recovered in the guest); sets
# recovered to how long it took; fails with the reasons.
recover_and_check() {
	local step=$1 key_sum=$2 secret=$3 on=$SECONDS active left
	"$vm" boot "$state" > /dev/null
	left=$((recover_timeout - (SECONDS - on)))
	if [ "$left" -le 0 ] || ! guest_timeout=$((left + 60)) in_guest "wait_target $left"; then
		say "after the cut at $step: edgeseal.target is not active $recover_timeout s after the power came back"
		diagnose
		return 1
	fi
	active=$(guest systemctl show -P ActiveEnterTimestampMonotonic edgeseal.target)
	recovered="$((SECONDS - on)) s after power-on (edgeseal.target active $((active / 1000000)) s into the guest's boot)"
	if ! in_guest "check_recovered '$key_sum' '$secret'"; then
		say "after the cut at $step: the chain came up, but not whole (above)"
		diagnose
		return 1
	fi
}

results=()
failed=0
# result KIND STEP PASS|FAIL DETAIL
result() {
	local line
	line=$(printf '%-10s %-24s %-4s %s' "$1" "$2" "$3" "$4")
	results+=("$line")
	say "$line"
	[ "$3" = PASS ] || failed=1
}

# ---------------------------------------------------------------------------
say "Given edgeseal's install tree with its test hooks, built on this machine"
tar=$project/build/vm/powercut-install.tar
GOTAGS=edgeseal_testhooks "$here/build-install.sh" "$tar" > /dev/null

say "And a VM with a TPM (its state in $EDGESEAL_VM_RUNS)"
state=
trap '[ -z "$state" ] || "$vm" stop "$state"' EXIT
trap 'exit 130' INT TERM
address=$("$vm" start)
state=$EDGESEAL_VM_RUNS/${address##*:}

say "And edgeseal installed in it, with seal.method tpm2 and edgeseal.target enabled"
# The guest's gzip is slow under TCG, but the link is slower.
gzip -1 < "$tar" | timeout "$guest_timeout" "$vm" ssh "$state" 'gzip -d | tar -C / --no-overwrite-dir -xf -'
guest "set -e
systemd-sysusers /usr/lib/sysusers.d/edgeseal.conf
systemd-tmpfiles --create /usr/lib/tmpfiles.d/edgeseal.conf
cat > /etc/edgeseal/edgeseal.yaml <<CONFIG
vault:
  listen: 127.0.0.1:$vault_port
seal:
  method: tpm2
services:
  - name: collector
    uids: [1001]
CONFIG
edgeseal config check /etc/edgeseal/edgeseal.yaml
# The pause hook's mark: edgeseal-unseal's profile (a release build's) has no
# rule for it.
install -d -m 0755 /etc/apparmor.d/local
echo '/run/edgeseal/.test-paused-at-* w,' > /etc/apparmor.d/local/edgeseal-unseal
systemctl daemon-reload
apparmor_parser -r -W /etc/apparmor.d/edgeseal-*
systemctl enable edgeseal.target
# What the test set up is on disk before the first cut.
sync"

# ---------------------------------------------------------------------------
say "When a first boot loses power at a step, Then the next boot recovers"
for step in $first_boot_steps; do
	say "[first boot, $step] Given a device that never booted, whose first boot pauses at $step"
	in_guest "set -e
never_booted
mkdir -p /run/systemd/system/edgeseal-unseal.service.d
printf '[Service]\nEnvironment=EDGESEAL_PAUSE_AT=%s\n' '$step' > /run/systemd/system/edgeseal-unseal.service.d/powercut.conf
systemctl daemon-reload
systemctl start --no-block edgeseal.target"
	say "[first boot, $step] When the power is cut there"
	pause_then_cut "$step"
	say "[first boot, $step] Then the next boot recovers"
	if recover_and_check "$step" "$key_sum" ""; then
		result "first boot" "$step" PASS "recovered $recovered"
	else
		result "first boot" "$step" FAIL "see above"
	fi
done

# ---------------------------------------------------------------------------
if [ -n "${later_boot_steps// /}" ]; then
say "When a later boot loses power at a step, Then the boot after it recovers, and the secret is intact"
secret=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
say "[later boot] Given a device whose first boot completed, holding a secret"
in_guest "set -e
never_booted
timeout 240 systemctl start edgeseal.target
root_token=\$(edgeseal root-token --ttl 10m)
VAULT_TOKEN=\$root_token vault kv put -mount=secret edgeseal/collector/powercut v=$secret > /dev/null
VAULT_TOKEN=\$root_token vault token revoke -self > /dev/null"
first_key_sum=$(guest 'sha256sum < /var/lib/edgeseal/unseal-key.sealed')
later_ok=1
for step in $later_boot_steps; do
	if [ "$later_ok" != 1 ]; then
		result "later boot" "$step" FAIL "not run: the device did not recover from the cut before"
		continue
	fi
	say "[later boot, $step] Given a clean shutdown, and a boot that pauses at $step"
	"$vm" poweroff "$state"
	"$vm" boot "$state" --append "systemd.setenv=EDGESEAL_PAUSE_AT=$step" > /dev/null
	say "[later boot, $step] When the power is cut there"
	pause_then_cut "$step"
	say "[later boot, $step] Then the boot after it recovers, the first boot's key unseals, and the secret reads back"
	if recover_and_check "$step" "$first_key_sum" "$secret"; then
		result "later boot" "$step" PASS "recovered $recovered"
	else
		result "later boot" "$step" FAIL "see above"
		later_ok=0
	fi
done
fi

echo
echo "powercut: $(( (SECONDS - started) / 60 )) min $(( (SECONDS - started) % 60 )) s in all"
printf '%s\n' "${results[@]}"
if [ "$failed" != 0 ]; then
	die "a boot did not recover from a power cut (details above)"
fi
echo "powercut: every boot recovered from its power cut"
