# edgeseal — build, install, test, demo. Run `make help` for the targets.
SHELL := /bin/bash

PREFIX      ?= /usr
BINDIR      ?= $(PREFIX)/bin
LIBEXECDIR  ?= $(PREFIX)/libexec/edgeseal
UNITDIR     ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
TMPFILESDIR ?= $(PREFIX)/lib/tmpfiles.d
DOCDIR      ?= $(PREFIX)/share/doc/edgeseal
SYSCONFDIR  ?= /etc
# The Vault-compatible server the units start: OpenBao's bao (the default), or
# HashiCorp Vault (VAULT=/usr/bin/vault). edgeseal-pki and edgeseal-unseal
# refuse a release they do not support (internal/vaultbin).
VAULT       ?= /usr/bin/bao
DESTDIR     ?=

GO          ?= go
export CGO_ENABLED := 0
# The Go release edgeseal is built and tested with, newer than the machine's
# Go (1.26.8) for the security fixes of its standard library that
# govulncheck asks for (make lint); the go command fetches it from the module
# proxy, once a machine. go.mod's go line (the least Go the code needs) stays
# as it is. The servers and spread are pinned builds of their own, made with
# the machine's own Go (tests/lib/build-*.sh drop this one).
# `make EDGESEAL_GOTOOLCHAIN=local ...` builds with the machine's Go instead
# (offline, a packager's chroot), which make lint's govulncheck then refuses.
EDGESEAL_GOTOOLCHAIN ?= go1.27.3
export EDGESEAL_GOTOOLCHAIN
export GOTOOLCHAIN := $(EDGESEAL_GOTOOLCHAIN)
# GOTAGS=edgeseal_testhooks builds the test bed's binaries, with the crash and
# failure injection of edgeseal-unseal; a release build leaves it empty.
GOTAGS      ?=
# The pkcs11 sealer runs the helper edgeseal-pkcs11 from LIBEXECDIR.
GOBUILD     := $(GO) build -trimpath -tags "$(GOTAGS)" -ldflags "-s -w -X github.com/edgeseal/edgeseal/internal/seal.pkcs11Helper=$(LIBEXECDIR)/edgeseal-pkcs11"
CMDS        := edgeseal edgeseal-pki edgeseal-unseal edgeseal-tokend edgeseal-exeid edgeseal-controller
UNITS       := edgeseal-pki.service edgeseal-vault.service edgeseal-unseal.service \
               edgeseal-ready.service edgeseal-tokend.socket edgeseal-tokend.service edgeseal.target \
               edgeseal-exeid.socket edgeseal-exeid.service \
               edgeseal-fsvault.service edgeseal-fsvault@.service
# AppArmor profiles (apparmor/*.in), installed in /etc/apparmor.d; docs/apparmor.md.
PROFILES    := edgeseal-pki edgeseal-unseal edgeseal-tokend edgeseal-exeid edgeseal-vault edgeseal-fsvault

.PHONY: all help build build-snap-binaries snap test-snaps install deps servers openbao vault test lint test-unit test-integration bench demo fuzz clean

all: build

help:
	@echo "make build             static binaries in bin/"
	@echo "make install DESTDIR=  binaries, units, AppArmor profiles, sysusers/tmpfiles, sample config, docs"
	@echo "make snap              dist/edgeseal_*.snap from snap/snapcraft.yaml, with the OpenBao build as bin/bao (SNAP_BAO=FILE: another)"
	@echo "make deps              install what the test bed needs (Debian packages; OpenBao and Vault built from their pins)"
	@echo "make test              linters, unit tests, integration tests under systemd in a container, then spread and power cuts on a VM"
	@echo "make lint              go vet, staticcheck (pinned, built once into the cache), gofmt, go mod tidy -diff"
	@echo "make spread            spread's suites on a Debian 12 VM under qemu (SPREAD_JOBS=...: some)"
	@echo "make spread-ubuntu     the same suites on an Ubuntu 24.04 VM (not part of make test)"
	@echo "make demo              boot a device in a container and show edgeseal at work"
	@echo "make bench             boot, re-unseal, token, TPM, file vault and controller fleet figures, and a VM's boot figures (N, min/median/max)"

build:
	@mkdir -p bin
	$(GOBUILD) -o bin/ $(addprefix ./cmd/,$(CMDS))
	CGO_ENABLED=1 $(GOBUILD) -o bin/ ./cmd/edgeseal-pkcs11

# edgeseal-pkcs11, the one cgo binary: it loads a vendor's PKCS#11 module (C)
# for seal.method pkcs11, in a process of its own, so that every other binary
# stays static (CGO_ENABLED=0 above). The snap does not ship it (docs/snap.md).

# The snap's binaries: the commands and the hook (meta/hooks/install, configure,
# connect-plug-*).
build-snap-binaries:
	@mkdir -p bin
	$(GOBUILD) -o bin/ $(addprefix ./cmd/,$(CMDS)) ./cmd/edgeseal-snap-hook

# The snap, assembled as snapcraft would from snap/snapcraft.yaml (tools/snapmeta
# writes meta/snap.yaml from it) and packed with `snap pack`. snapcraft builds
# OpenBao from source; here SNAP_BAO names the bao to ship as bin/bao, by
# default the OpenBao build of tests/lib/build-openbao.sh (same pin and flags).
SNAP_BAO    ?= $(shell tests/lib/build-openbao.sh --path)
SNAPDIR     ?= build/snap
SNAP_OUT    ?= dist
snap: build-snap-binaries
	@if [ -z "$(SNAP_BAO)" ] || [ ! -x "$(SNAP_BAO)" ]; then \
		echo "make snap: no OpenBao build at $(SNAP_BAO): run make deps (or tests/lib/build-openbao.sh), or set SNAP_BAO to a static bao" >&2; exit 2; fi
	rm -rf $(SNAPDIR)/prime
	install -Dm0755 -t $(SNAPDIR)/prime/bin bin/edgeseal bin/edgeseal-pki bin/edgeseal-unseal bin/edgeseal-tokend
	install -Dm0755 bin/edgeseal-snap-hook $(SNAPDIR)/prime/meta/hooks/install
	install -Dm0755 bin/edgeseal-snap-hook $(SNAPDIR)/prime/meta/hooks/configure
	for hook in connect-plug-tpm connect-plug-daemon-notify connect-plug-system-observe; do \
		install -Dm0755 bin/edgeseal-snap-hook $(SNAPDIR)/prime/meta/hooks/$$hook; done
	install -m0755 $(SNAP_BAO) $(SNAPDIR)/prime/bin/bao
	$(GO) run ./tools/snapmeta -snapcraft snap/snapcraft.yaml -prime $(SNAPDIR)/prime
	@mkdir -p $(SNAP_OUT)
	snap pack --compression=lzo $(SNAPDIR)/prime $(SNAP_OUT)

# The snap suite's test snaps, packed into SNAP_OUT: es-consumer (a consumer
# of the tokend slot, with edgeseal's static CLI) and es-intruder (a consumer
# that tries to take another's socket). tests/spread/snap/install, the
# container's snap tests and tests/vm/build-install.sh pack them here.
TEST_SNAPS_WORK ?= build/test-snaps
test-snaps: build-snap-binaries
	rm -rf $(TEST_SNAPS_WORK)
	mkdir -p $(TEST_SNAPS_WORK) $(SNAP_OUT)
	cp -r tests/spread/snap/es-consumer $(TEST_SNAPS_WORK)/es-consumer
	install -Dm0755 bin/edgeseal $(TEST_SNAPS_WORK)/es-consumer/bin/edgeseal
	cp -r tests/spread/snap/es-intruder $(TEST_SNAPS_WORK)/es-intruder
	$(GOBUILD) -o $(TEST_SNAPS_WORK)/es-intruder/bin/es-intruder ./tests/integration/snapintruder
	snap pack $(TEST_SNAPS_WORK)/es-consumer $(SNAP_OUT)
	snap pack $(TEST_SNAPS_WORK)/es-intruder $(SNAP_OUT)
	rm -rf $(TEST_SNAPS_WORK)

install: build
	install -Dm0755 bin/edgeseal $(DESTDIR)$(BINDIR)/edgeseal
	install -Dm0755 bin/edgeseal-pki $(DESTDIR)$(LIBEXECDIR)/edgeseal-pki
	install -Dm0755 bin/edgeseal-unseal $(DESTDIR)$(LIBEXECDIR)/edgeseal-unseal
	install -Dm0755 bin/edgeseal-tokend $(DESTDIR)$(LIBEXECDIR)/edgeseal-tokend
	install -Dm0755 bin/edgeseal-exeid $(DESTDIR)$(LIBEXECDIR)/edgeseal-exeid
	install -Dm0755 bin/edgeseal-pkcs11 $(DESTDIR)$(LIBEXECDIR)/edgeseal-pkcs11
	install -Dm0755 bin/edgeseal-controller $(DESTDIR)$(BINDIR)/edgeseal-controller
	install -d $(DESTDIR)$(UNITDIR)
	for u in $(UNITS); do \
		sed -e 's|@LIBEXECDIR@|$(LIBEXECDIR)|g' -e 's|@BINDIR@|$(BINDIR)|g' \
		    -e 's|@VAULT@|$(VAULT)|g' -e 's|@DOCDIR@|$(DOCDIR)|g' \
		    systemd/$$u.in > $(DESTDIR)$(UNITDIR)/$$u && chmod 0644 $(DESTDIR)$(UNITDIR)/$$u; \
	done
	install -d $(DESTDIR)$(SYSCONFDIR)/apparmor.d
	for p in $(PROFILES); do \
		sed -e 's|@LIBEXECDIR@|$(LIBEXECDIR)|g' -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@VAULT@|$(VAULT)|g' \
		    apparmor/$$p.in > $(DESTDIR)$(SYSCONFDIR)/apparmor.d/$$p && chmod 0644 $(DESTDIR)$(SYSCONFDIR)/apparmor.d/$$p; \
	done
	install -Dm0644 systemd/edgeseal.sysusers $(DESTDIR)$(SYSUSERSDIR)/edgeseal.conf
	install -Dm0644 systemd/edgeseal.tmpfiles $(DESTDIR)$(TMPFILESDIR)/edgeseal.conf
	install -Dm0644 internal/config/edgeseal.yaml $(DESTDIR)$(DOCDIR)/edgeseal.yaml.sample
	install -Dm0644 README.md $(DESTDIR)$(DOCDIR)/README.md
	install -Dm0644 docs/sealed-blob.md $(DESTDIR)$(DOCDIR)/sealed-blob.md
	install -Dm0644 docs/attestation.md $(DESTDIR)$(DOCDIR)/attestation.md
	install -Dm0644 docs/recovery.md $(DESTDIR)$(DOCDIR)/recovery.md
	install -Dm0644 docs/apparmor.md $(DESTDIR)$(DOCDIR)/apparmor.md
	install -Dm0644 docs/snap.md $(DESTDIR)$(DOCDIR)/snap.md
	install -Dm0644 docs/fsvault.md $(DESTDIR)$(DOCDIR)/fsvault.md
	install -Dm0644 docs/controller.md $(DESTDIR)$(DOCDIR)/controller.md
	install -Dm0644 docs/examples/app-with-vault.service $(DESTDIR)$(DOCDIR)/examples/app-with-vault.service
	@if [ ! -e $(DESTDIR)$(SYSCONFDIR)/edgeseal/edgeseal.yaml ]; then \
		install -Dm0644 internal/config/edgeseal.yaml $(DESTDIR)$(SYSCONFDIR)/edgeseal/edgeseal.yaml; \
	fi

# What the test bed needs on a fresh Debian 12 machine; installs only what is
# missing: Debian packages, and the two servers built from their pinned
# sources into $(EDGESEAL_CACHE) (default ~/.cache/edgeseal), rebuilt only when
# a pin changes. OpenBao (the default server) from a source tarball:
# OPENBAO_SRC=FILE, else ../shared/third_party/ beside the project, else a
# clone of the pinned tag.
OPENBAO_SRC ?=
deps:
	tests/lib/install-deps.sh
	@$(MAKE) -s servers

# The servers alone, both builds at once (on a fresh machine most of each is
# fetching modules, which overlaps well); each is a no-op once cached.
servers:
	@EDGESEAL_OPENBAO_SRC="$(OPENBAO_SRC)" tests/lib/build-openbao.sh >/dev/null & bao=$$!; \
	tests/lib/build-vault.sh >/dev/null; vault=$$?; wait $$bao; bao=$$?; \
	[ $$vault = 0 ] && [ $$bao = 0 ]
openbao:
	@EDGESEAL_OPENBAO_SRC="$(OPENBAO_SRC)" tests/lib/build-openbao.sh >/dev/null
vault:
	@tests/lib/build-vault.sh >/dev/null

test: deps lint test-unit test-integration test-vm

# The linters CI runs, clean: go vet, staticcheck (its config:
# staticcheck.conf) and govulncheck over every build (the release build, the
# test bed's hooks, the integration tests), gofmt, and go.mod and go.sum as
# `go mod tidy` leaves them. The tools are pinned and built once into the
# cache, by their version and the Go release that built them, like the
# servers. govulncheck reads no network database (vuln.go.dev cannot be
# reached from the machines CI runs on): its database is made, once, from the
# OSV files of the pinned golang.org/x/vulndb module, which the module proxy
# serves, by that module's own indexdb; VULNDB_VERSION is the day's data.
TOOLS               := $(or $(EDGESEAL_CACHE),$(HOME)/.cache/edgeseal)/tools
STATICCHECK_VERSION := v0.8.2
STATICCHECK         := $(TOOLS)/staticcheck-$(STATICCHECK_VERSION)-$(EDGESEAL_GOTOOLCHAIN)/staticcheck
GOVULNCHECK_VERSION := v1.9.0
GOVULNCHECK         := $(TOOLS)/govulncheck-$(GOVULNCHECK_VERSION)-$(EDGESEAL_GOTOOLCHAIN)/govulncheck
VULNDB_VERSION      := v0.0.0-20261105234957-e22db6528018
VULNDB              := $(TOOLS)/vulndb-$(VULNDB_VERSION)
$(STATICCHECK):
	GOBIN=$(dir $@) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
$(GOVULNCHECK):
	GOBIN=$(dir $@) $(GO) install golang.org/x/vuln/cmd/govulncheck@$(GOVULNCHECK_VERSION)
$(VULNDB)/index/db.json:
	GOBIN=$(VULNDB).tmp/bin $(GO) install golang.org/x/vulndb/cmd/indexdb@$(VULNDB_VERSION)
	src=$$($(GO) mod download -json golang.org/x/vulndb@$(VULNDB_VERSION) | sed -n 's/^\t"Dir": "\(.*\)",$$/\1/p'); \
		[ -d "$$src/data/osv" ] || { echo "lint: no data/osv in golang.org/x/vulndb@$(VULNDB_VERSION) ($$src)" >&2; exit 1; }; \
		rm -rf $(VULNDB).tmp/db && $(VULNDB).tmp/bin/indexdb -vulns "$$src/data/osv" -out $(VULNDB).tmp/db
	rm -rf $(VULNDB) && mv $(VULNDB).tmp/db $(VULNDB) && rm -rf $(VULNDB).tmp

lint: $(STATICCHECK) $(GOVULNCHECK) $(VULNDB)/index/db.json
	$(GO) vet ./...
	$(GO) vet -tags integration,edgeseal_testhooks ./...
	@# edgeseal-pkcs11 is the one cgo package: the CGO_ENABLED=0 runs skip it.
	CGO_ENABLED=1 $(GO) vet ./cmd/edgeseal-pkcs11/
	CGO_ENABLED=1 $(GO) vet -tags integration ./cmd/edgeseal-pkcs11/
	$(STATICCHECK) ./...
	$(STATICCHECK) -tags integration,edgeseal_testhooks ./...
	CGO_ENABLED=1 $(STATICCHECK) ./cmd/edgeseal-pkcs11/
	CGO_ENABLED=1 $(STATICCHECK) -tags integration ./cmd/edgeseal-pkcs11/
	$(GOVULNCHECK) -db file://$(VULNDB) ./...
	$(GOVULNCHECK) -db file://$(VULNDB) -tags integration,edgeseal_testhooks ./...
	CGO_ENABLED=1 $(GOVULNCHECK) -db file://$(VULNDB) ./cmd/edgeseal-pkcs11/
	@out=$$(gofmt -l .); [ -z "$$out" ] || { echo "gofmt: not formatted: $$out" >&2; exit 1; }
	$(GO) mod tidy -diff

test-unit:
	$(GO) test -count=1 ./...
	CGO_ENABLED=1 $(GO) test -count=1 ./cmd/edgeseal-pkcs11/
	tests/lib/fuzz-all.sh 5s

test-integration: servers
	@mkdir -p build && rm -f build/spread-not-run.txt
	EDGESEAL_SPREAD_REPORT=$(CURDIR)/build/spread-not-run.txt \
		$(GO) test -tags integration -count=1 -timeout 45m ./tests/... ./internal/... ./cmd/edgeseal/ ./tokenclient/
	CGO_ENABLED=1 $(GO) test -tags integration -count=1 ./cmd/edgeseal-pkcs11/
	@# The server matrix's second server for the packages that speak to a server
	@# without systemd (init, unseal, setup, generate-root, token roles, KV v1
	@# and v2, the client's checks); tests/integration runs its matrix itself.
	EDGESEAL_SERVER=vault $(GO) test -tags integration -count=1 ./internal/secretstore/ ./tokenclient/
	@cat build/spread-not-run.txt

fuzz:
	tests/lib/fuzz-all.sh 20s

bench: deps
	$(GO) test -tags integration -count=1 -run '^$$' -bench . -benchtime 5x -timeout 75m ./tests/integration/
	$(GO) test -tags integration -count=1 -run '^$$' -bench . -benchtime 50x ./internal/tpm/
	$(GO) test -tags integration -count=1 -run '^$$' -bench . -benchtime 20x ./internal/fsvault/
	$(GO) test -count=1 -run '^$$' -bench . -benchtime 20x ./internal/exeid/
	$(GO) test -tags integration -count=1 -run '^$$' -bench PKCS11 -benchtime 20x ./internal/seal/
	$(GO) test -tags integration -count=1 -run '^$$' -bench ControllerFleet -benchtime 5x -timeout 60m ./internal/refctl/
	@# The real kernel's figures: a Debian 12 VM under qemu (tests/vm/bench.sh).
	tests/vm/bench.sh

demo: deps
	EDGESEAL_DEMO=1 $(GO) test -tags integration -count=1 -timeout 10m -run '^TestDemo$$' -v ./tests/integration/ 

clean:
	rm -rf bin build dist

# spread itself on a real virtual machine (tests/vm, docs/spread.md): builds spread
# from its pinned source, the Debian 12 VM image (cached in ~/.cache/edgeseal;
# about 15 minutes cold without KVM) and the install tree, then runs
# `spread vm:debian-12-64` on VMs under qemu (KVM if /dev/kvm, else TCG) with a
# TPM and AppArmor enforcing. SPREAD_JOBS picks jobs, e.g.
#   make spread SPREAD_JOBS=vm:debian-12-64:tests/spread/boot-chain/
SPREAD_JOBS ?=
.PHONY: spread test-vm
spread:
	tests/vm/spread.sh $(SPREAD_JOBS)

# The same suites on an Ubuntu 24.04 VM (tests/vm/build-image.sh ubuntu-24.04-64:
# debootstrap from archive.ubuntu.com, Ubuntu's kernel, whose AppArmor mediates
# D-Bus). Not part of make test: CI reaches only Debian's registries, and has
# time for one system. SPREAD_JOBS picks jobs as for make spread, e.g.
#   make spread-ubuntu SPREAD_JOBS=vm:ubuntu-24.04-64:tests/spread/snap/
.PHONY: spread-ubuntu
spread-ubuntu:
	tests/vm/spread.sh $(or $(SPREAD_JOBS),vm:ubuntu-24.04-64)

# The power-cut test (tests/vm/powercut.sh): qemu killed (SIGKILL: the guest
# loses power) at each step below of a first and of a later boot, and the VM
# booted again from the same disk and TPM; the chain must recover with nothing
# lost. About 11 minutes under TCG on a quiet 2-core machine, 30 with other VMs
# beside it.
POWERCUT_FIRST_BOOT ?= init-marker-written vault-initialized key-sealed init-marker-removed issuing-token-written
POWERCUT_LATER_BOOT ?= vault-unsealed old-tokens-revoked issuing-token-written
.PHONY: powercut
powercut:
	EDGESEAL_POWERCUT_FIRST_BOOT="$(POWERCUT_FIRST_BOOT)" EDGESEAL_POWERCUT_LATER_BOOT="$(POWERCUT_LATER_BOOT)" \
		tests/vm/powercut.sh

# The real machine's part of `make test`: every spread suite on the VM, then
# the power cuts at every step.
test-vm: spread powercut
