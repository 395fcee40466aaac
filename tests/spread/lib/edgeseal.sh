#!/bin/bash
# Helpers of edgeseal's spread tasks (tests/spread/*/*/task.yaml):
#   . "$TESTSLIB/edgeseal.sh"
# A directory without task.yaml files: not a suite.

# install_ikm_hook installs the vendor's key-material hook a device ships (the
# ikm-hook seal method): it prints this device's secret, made here once.
install_ikm_hook() {
	install -d -m 0755 /etc/edgeseal
	if [ ! -s /etc/edgeseal/device-secret ]; then
		(umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > /etc/edgeseal/device-secret)
	fi
	cat > /etc/edgeseal/ikm-hook <<'HOOK'
#!/bin/sh
# Vendor hook: prints this device's input keying material (IKM) on stdout.
read -r ikm < /etc/edgeseal/device-secret
printf '%s' "$ikm"
HOOK
	chmod 0700 /etc/edgeseal/ikm-hook
	# edgeseal-unseal's AppArmor profile lets the hook run in its own profile
	# and asks a hook that needs more (here: its shell, the C library, the
	# secret) to say so in local/edgeseal-unseal. Where that profile is loaded
	# (a machine whose kernel enforces AppArmor), it is reloaded with these.
	[ -d /etc/apparmor.d ] || return 0
	install -d -m 0755 /etc/apparmor.d/local
	cat > /etc/apparmor.d/local/edgeseal-unseal <<'RULES'
# The test hook of edgeseal's spread tasks (tests/spread/lib/edgeseal.sh): a
# shell script, read by its interpreter (dash, dynamically linked), that reads
# the device's secret with the shell's own read.
/etc/edgeseal/ikm-hook r,
/{usr/,}bin/dash mrix,
/etc/ld.so.cache r,
/{usr/,}lib/*-linux-gnu*/lib*.so* mr,
/etc/edgeseal/device-secret r,
RULES
	reload_unseal_profile
}

# reload_unseal_profile reloads edgeseal-unseal's AppArmor profile, if the
# kernel has it, so that local/edgeseal-unseal's lines apply.
reload_unseal_profile() {
	if grep -qs '^edgeseal-unseal ' /sys/kernel/security/apparmor/profiles; then
		apparmor_parser -r /etc/apparmor.d/edgeseal-unseal
	fi
}

# not COMMAND... succeeds when COMMAND fails (and says so when it does not).
not() {
	if "$@"; then
		echo "unexpected success: $*" >&2
		return 1
	fi
	return 0
}

# vault_addr is where this device's Vault listens.
vault_addr() {
	echo "https://127.0.0.1:$EDGESEAL_VAULT_PORT"
}

# vault_as TOKEN ARGS... runs the server's CLI with TOKEN, trusting this boot's
# CA: OpenBao's bao, which spread.yaml's prepare installs (it reads the VAULT_
# variables when its BAO_ ones are unset).
vault_as() {
	local token=$1
	shift
	VAULT_ADDR=$(vault_addr) VAULT_CACERT=/run/edgeseal/pki/ca.crt VAULT_TOKEN=$token bao "$@"
}

# token_in FILE prints the client token of a token file (Vault's auth response JSON).
token_in() {
	python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["auth"]["client_token"])' "$1"
}

# wait_for DESCRIPTION COMMAND... retries COMMAND for up to 30 seconds
# (EDGESEAL_WAIT: another bound, for a task on an emulated machine).
wait_for() {
	local what=$1 deadline=$((SECONDS + ${EDGESEAL_WAIT:-30}))
	shift
	# By the clock: on an emulated machine each try takes far longer than
	# the pause between two.
	until "$@" >/dev/null 2>&1; do
		if [ "$SECONDS" -ge "$deadline" ]; then
			echo "timed out waiting ${EDGESEAL_WAIT:-30} s for $what" >&2
			return 1
		fi
		sleep 0.1
	done
	return 0
}

# chain_units are edgeseal's units, in the order a boot starts them.
chain_units="edgeseal-pki.service edgeseal-vault.service edgeseal-unseal.service edgeseal-ready.service edgeseal-tokend.socket edgeseal.target"

# restore_edgeseal stops edgeseal, removes its state and the task's units (the
# arguments), and puts back the default config: the next task boots a device
# fresh from the factory.
restore_edgeseal() {
	systemctl stop edgeseal.target edgeseal-ready.service edgeseal-tokend.service edgeseal-tokend.socket \
		edgeseal-unseal.service edgeseal-vault.service edgeseal-pki.service "$@" 2>/dev/null || true
	systemctl disable edgeseal.target 2>/dev/null || true
	for unit in "$@"; do
		rm -f "/etc/systemd/system/$unit"
	done
	systemctl daemon-reload
	systemctl reset-failed 2>/dev/null || true
	rm -rf /var/lib/edgeseal /var/lib/edgeseal-vault /var/lib/edgeseal-pki /var/lib/private/edgeseal-pki /run/edgeseal
	rm -f /etc/edgeseal/ikm-hook /etc/edgeseal/device-secret
	if [ -e /etc/apparmor.d/local/edgeseal-unseal ]; then
		rm -f /etc/apparmor.d/local/edgeseal-unseal
		reload_unseal_profile
	fi
	edgeseal config default > /etc/edgeseal/edgeseal.yaml
	systemd-tmpfiles --create /usr/lib/tmpfiles.d/edgeseal.conf
}

# start_swtpm starts a software TPM on loopback ($EDGESEAL_SWTPM_PORT, its control
# port the next one) as a transient unit, its state where swtpm's AppArmor profile
# allows, and waits until it answers.
start_swtpm() {
	install -d -m 0700 /var/lib/swtpm/edgeseal-spread
	systemd-run --unit=edgeseal-spread-swtpm --collect \
		swtpm socket --tpm2 --tpmstate dir=/var/lib/swtpm/edgeseal-spread \
		--server "type=tcp,port=$EDGESEAL_SWTPM_PORT,bindaddr=127.0.0.1" \
		--ctrl "type=tcp,port=$((EDGESEAL_SWTPM_PORT + 1)),bindaddr=127.0.0.1" \
		--flags not-need-init,startup-clear
	wait_for "swtpm on port $EDGESEAL_SWTPM_PORT" \
		tpm2_getrandom -T "swtpm:host=127.0.0.1,port=$EDGESEAL_SWTPM_PORT" --hex 8
}

# stop_swtpm stops the software TPM and forgets its state.
stop_swtpm() {
	systemctl stop edgeseal-spread-swtpm.service 2>/dev/null || true
	rm -rf /var/lib/swtpm/edgeseal-spread
}

