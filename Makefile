# Platter. `make demo` and `make test` work on a fresh Debian machine with Go.
SHELL := /bin/bash
GO ?= go
BIN := bin/platter

# command -> Debian package, installed with apt-get when missing.
TOOLS := sgdisk:gdisk sfdisk:fdisk mkfs.fat:dosfstools fsck.fat:dosfstools \
	mcopy:mtools ntfs-3g:ntfs-3g mkntfs:ntfs-3g ntfsfix:ntfs-3g \
	partclone.extfs:partclone zstd:zstd qemu-img:qemu-utils \
	e2fsck:e2fsprogs debugfs:e2fsprogs mkfs.xfs:xfsprogs mkfs.btrfs:btrfs-progs \
	mkfs.exfat:exfatprogs /usr/bin/time:time blkid:util-linux losetup:mount \
	fusermount:fuse3 bc:bc gcc:gcc qemu-system-x86_64:qemu-system-x86 \
	nbd-client:nbd-client as:binutils setfattr:attr ip:iproute2 \
	systemd-analyze:systemd xorriso:xorriso genisoimage:genisoimage 7z:p7zip-full \
	unshare:util-linux nsenter:util-linux setpriv:util-linux man:man-db groff:groff-base \
	/usr/share/bash-completion/bash_completion:bash-completion zsh:zsh fish:fish \
	pvcreate:lvm2 cryptsetup:cryptsetup-bin mount.exfat-fuse:exfat-fuse \
	mkfs.f2fs:f2fs-tools sload.f2fs:f2fs-tools fsck.f2fs:f2fs-tools dump.f2fs:f2fs-tools \
	partclone.xfs:partclone mkswap:util-linux swaplabel:util-linux curl:curl \
	resize2fs:e2fsprogs ntfsresize:ntfs-3g fatresize:fatresize xfs_growfs:xfsprogs \
	resize.f2fs:f2fs-tools rsync:rsync getfacl:acl setfacl:acl \
	qcowinfo:libqcow-utils qcowmount:libqcow-utils vmdkinfo:libvmdk-utils vmdkmount:libvmdk-utils \
	vhdiinfo:libvhdi-utils vhdimount:libvhdi-utils \
	dumpe2fs:e2fsprogs grub-mkimage:grub-common \
	/usr/lib/grub/i386-pc/boot.img:grub-pc-bin /usr/lib/grub/x86_64-efi/normal.mod:grub-efi-amd64-bin \
	/usr/share/OVMF/OVMF_CODE.fd:ovmf /usr/share/doc/busybox-static:busybox-static \
	ocs-sr:clonezilla parted:parted partclone.restore:partclone lz4:lz4 xz:xz-utils bzip2:bzip2 split:coreutils \
	ntfsclone:ntfs-3g xfs_repair:xfsprogs mkudffs:udftools udfinfo:udftools udfclient:udfclient ddrescue:gddrescue ddrescuelog:gddrescue addpart:util-linux

# Fuzz targets run for FUZZTIME each in `make test`.
FUZZTIME ?= 10s
FUZZ := ./internal/ptable:FuzzMBR ./internal/ptable:FuzzGPT \
	./internal/fs/ext:FuzzDetect ./internal/fs/ext:FuzzFiles ./internal/fs/fat:FuzzDetect \
	./internal/fs/ext:FuzzJournal ./internal/fs/ext:FuzzDetectJournal \
	./internal/fs/fat:FuzzFiles ./internal/fs/ntfs:FuzzNTFS \
	./internal/fs/ntfs:FuzzDetect ./internal/image:FuzzReader ./internal/image:FuzzStream ./internal/seal:FuzzDecode \
	./internal/fs/xfs:FuzzDetect ./internal/fs/btrfs:FuzzDetect \
	./internal/fs/lvm:FuzzDetect ./internal/fs/lvm:FuzzMetadata ./internal/fs/luks:FuzzHeader \
	./internal/fs/exfat:FuzzDetect ./internal/fs/exfat:FuzzFiles ./internal/fs/iso9660:FuzzISO9660 \
	./internal/fs/f2fs:FuzzDetect ./internal/fs/swap:FuzzDetect ./internal/fs/udf:FuzzUDF \
	./internal/vdisk:FuzzOpenQCOW2 ./internal/vdisk:FuzzOpenVHD ./internal/vdisk:FuzzOpenVHDX ./internal/vdisk:FuzzOpenVMDK \
	./internal/partclone:FuzzPartclone ./internal/clonezilla:FuzzSfdisk \
	./internal/mrimgx:FuzzMrimgx ./internal/ntfsclone:FuzzReader ./internal/owners:FuzzClassify \
	./internal/calendar:FuzzParse ./internal/codec:FuzzDecode

.PHONY: all build build-purego deps minio bootkernel ntfs3kernel test unit e2e fuzz vet demo bench clean install uninstall

all: build

# One static binary. cgo only compiles the reference C zstd into it (a
# measured win, docs/performance.md); netgo/osusergo keep libc's resolver
# out. `make build-purego` builds without any C.
BUILD_FLAGS := -trimpath -tags netgo,osusergo -ldflags '-extldflags "-static"'

build:
	CGO_ENABLED=1 $(GO) build $(BUILD_FLAGS) -o $(BIN) ./cmd/platter

build-purego:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN) ./cmd/platter

deps:
	@echo "==> deps"
	@missing=""; for t in $(TOOLS); do cmd=$${t%%:*}; pkg=$${t##*:}; \
		command -v $$cmd >/dev/null 2>&1 || [ -e $$cmd ] || [ -x /usr/sbin/$$cmd ] || [ -x /sbin/$$cmd ] || missing="$$missing $$pkg"; done; \
	ls /usr/lib/*/libc.a >/dev/null 2>&1 || missing="$$missing libc6-dev"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$(echo $$missing | tr ' ' '\n' | sort -u) >/dev/null; \
	fi

# The S3 server the tests start on loopback (internal/store/s3/s3test):
# MinIO, built from the Go module proxy once (about 3 minutes) into the
# user's cache, where the tests look after PATH. A missing one fails the
# S3 tests; it never skips them.
MINIO_MODULE := github.com/minio/minio@v0.0.0-20260212201848-7aac2a2c5b7c
MINIO_DIR := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/platter/minio

minio:
	@command -v minio >/dev/null 2>&1 || [ -x "$(MINIO_DIR)/minio" ] || { \
		echo "==> minio: building $(MINIO_MODULE) into $(MINIO_DIR) (about 3 minutes, once)"; \
		GOBIN="$(MINIO_DIR)" $(GO) install $(MINIO_MODULE); }

# The Debian kernel on the boot tests' disks (test/e2e/bootdisk_test.go):
# the package linux-image-cloud-amd64 depends on, fetched once with
# apt-get download into the user's cache, where the tests look. It is
# unpacked by the tests, never installed. A missing one fails them.
BOOT_KERNEL := linux-image-cloud-amd64
BOOT_DIR := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/platter/boot

bootkernel:
	@ls "$(BOOT_DIR)"/linux-image-*-cloud-amd64_*_amd64.deb >/dev/null 2>&1 || { \
		echo "==> bootkernel: apt-get download of $(BOOT_KERNEL)'s kernel into $(BOOT_DIR)"; \
		mkdir -p "$(BOOT_DIR)" && cd "$(BOOT_DIR)" && \
		pkg() { apt-cache depends $(BOOT_KERNEL) 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[^ ]*\)$$/\1/p' | head -1; }; \
		{ p=$$(pkg); [ -n "$$p" ] && apt-get download -qq -o APT::Sandbox::User=root "$$p"; } || \
		{ apt-get update -qq && p=$$(pkg) && [ -n "$$p" ] && apt-get download -qq -o APT::Sandbox::User=root "$$p"; } || \
		{ echo "bootkernel: cannot download $(BOOT_KERNEL)'s kernel"; exit 1; }; }

# The Debian kernel the ntfs3 test boots (test/e2e/ntfs3_test.go) to have
# Linux's ntfs3 driver write an NTFS volume: Debian 12's own kernel (6.1)
# and its cloud kernel have no ntfs3; the 6.12 one has it as a module.
# Fetched once like bootkernel, unpacked by the test; a missing one fails it.
NTFS3_KERNEL := linux-image-6.12-amd64
NTFS3_DIR := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/platter/ntfs3kernel

ntfs3kernel:
	@ls "$(NTFS3_DIR)"/linux-image-*-amd64_*_amd64.deb >/dev/null 2>&1 || { \
		echo "==> ntfs3kernel: apt-get download of $(NTFS3_KERNEL)'s kernel into $(NTFS3_DIR)"; \
		mkdir -p "$(NTFS3_DIR)" && cd "$(NTFS3_DIR)" && \
		pkg() { apt-cache depends $(NTFS3_KERNEL) 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[^ ]*\)$$/\1/p' | head -1; }; \
		{ p=$$(pkg); [ -n "$$p" ] && apt-get download -qq -o APT::Sandbox::User=root "$$p"; } || \
		{ apt-get update -qq && p=$$(pkg) && [ -n "$$p" ] && apt-get download -qq -o APT::Sandbox::User=root "$$p"; } || \
		{ echo "ntfs3kernel: cannot download $(NTFS3_KERNEL)'s kernel"; exit 1; }; }

STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

# Each phase prints its name first, so a long silent one (staticcheck's
# first run, the race build) is seen to be working, not hung.
vet:
	@echo "==> vet"
	$(GO) vet ./...
	@echo "==> staticcheck"
	$(GO) run $(STATICCHECK) ./...
	@echo "==> gofmt"
	@out=$$(gofmt -l cmd internal test); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi

# Every `go test` has its own -timeout (per package), well above what a
# busy 2-core machine takes (the slowest race package, internal/fs/ext,
# about 2.5 minutes; e2e about 6), so a slow machine does not hit Go's
# default of 10 minutes and a hang still fails, with every goroutine's
# stack, long before CI's 90.
UNIT_TIMEOUT ?= 20m
E2E_TIMEOUT ?= 50m
FUZZ_TIMEOUT ?= 10m

unit: deps minio
	@echo "==> unit (race)"
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout $(UNIT_TIMEOUT) ./internal/... ./cmd/...
	@echo "==> unit (pure Go)"
	CGO_ENABLED=0 $(GO) test -count=1 -timeout $(UNIT_TIMEOUT) ./internal/codec ./internal/backup ./internal/image ./internal/restore

e2e: deps build minio bootkernel ntfs3kernel
	@echo "==> e2e"
	$(GO) test -count=1 -timeout $(E2E_TIMEOUT) ./test/...

# A run that fails with nothing but "context deadline exceeded" and writes
# no failing input is Go's own race at the end of -fuzztime (go.dev/issue/
# 75804, fixed in Go 1.27): said, and not counted as a failure. A real
# failure always writes its input under testdata/fuzz.
fuzz: deps
	@set -e; for f in $(FUZZ); do pkg=$${f%%:*}; fn=$${f##*:}; \
		echo "==> fuzz $$pkg $$fn ($(FUZZTIME))"; \
		if ! out=$$($(GO) test -run='^$$' -fuzz="^$$fn\$$" -fuzztime=$(FUZZTIME) -fuzzminimizetime=5s -timeout $(FUZZ_TIMEOUT) $$pkg 2>&1); then \
			if echo "$$out" | grep -qx '    context deadline exceeded' && ! echo "$$out" | grep -q 'Failing input written'; then \
				echo "    (ended by Go's fuzz deadline race, go.dev/issue/75804; no failing input)"; \
			else echo "$$out" | tail -40; exit 1; fi; \
		fi; \
	done

test: deps minio bootkernel ntfs3kernel vet fuzz unit e2e

demo: deps build
	./scripts/demo.sh

bench: deps build minio
	./scripts/bench.sh

# make install [PREFIX=/usr/local] [DESTDIR=]: the binary, a man page per
# command (written by the binary itself, from the same command tree as
# --help) and the bash, zsh and fish completions where each shell looks.
PREFIX ?= /usr/local
BINDIR = $(DESTDIR)$(PREFIX)/bin
MANDIR = $(DESTDIR)$(PREFIX)/share/man/man1
BASHCOMPDIR = $(DESTDIR)$(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR = $(DESTDIR)$(PREFIX)/share/zsh/site-functions
FISHCOMPDIR = $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d

install: build
	@echo "==> install into $(DESTDIR)$(PREFIX)"
	@set -e; stage=$$(mktemp -d); trap 'rm -rf "$$stage"' EXIT; \
	$(BIN) __docs --man "$$stage"; \
	for sh in bash zsh fish; do $(BIN) completion $$sh > "$$stage/$$sh"; done; \
	set -x; \
	install -d $(BINDIR) $(MANDIR) $(BASHCOMPDIR) $(ZSHCOMPDIR) $(FISHCOMPDIR); \
	install -m 0755 $(BIN) $(BINDIR)/platter; \
	install -m 0644 "$$stage"/*.1 $(MANDIR)/; \
	install -m 0644 "$$stage/bash" $(BASHCOMPDIR)/platter; \
	install -m 0644 "$$stage/zsh" $(ZSHCOMPDIR)/_platter; \
	install -m 0644 "$$stage/fish" $(FISHCOMPDIR)/platter.fish

uninstall:
	@echo "==> uninstall from $(DESTDIR)$(PREFIX)"
	rm -f $(BINDIR)/platter $(MANDIR)/platter.1 $(MANDIR)/platter-*.1 \
		$(BASHCOMPDIR)/platter $(ZSHCOMPDIR)/_platter $(FISHCOMPDIR)/platter.fish

clean:
	rm -rf bin
