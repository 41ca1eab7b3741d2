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
	unshare:util-linux nsenter:util-linux

# Fuzz targets run for FUZZTIME each in `make test`.
FUZZTIME ?= 10s
FUZZ := ./internal/ptable:FuzzMBR ./internal/ptable:FuzzGPT \
	./internal/fsmap/ext:FuzzDetect ./internal/fsmap/ext:FuzzFiles ./internal/fsmap/fat:FuzzDetect \
	./internal/fsmap/ntfs:FuzzDetect ./internal/image:FuzzReader

.PHONY: all build build-purego deps test unit e2e fuzz vet demo bench clean

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
	@missing=""; for t in $(TOOLS); do cmd=$${t%%:*}; pkg=$${t##*:}; \
		command -v $$cmd >/dev/null 2>&1 || [ -x $$cmd ] || [ -x /usr/sbin/$$cmd ] || [ -x /sbin/$$cmd ] || missing="$$missing $$pkg"; done; \
	ls /usr/lib/*/libc.a >/dev/null 2>&1 || missing="$$missing libc6-dev"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$(echo $$missing | tr ' ' '\n' | sort -u) >/dev/null; \
	fi

STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

vet:
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...
	@out=$$(gofmt -l cmd internal test); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi

unit: deps
	CGO_ENABLED=1 $(GO) test -race -count=1 ./internal/... ./cmd/...
	CGO_ENABLED=0 $(GO) test -count=1 ./internal/codec ./internal/backup ./internal/image ./internal/restore

e2e: deps build
	$(GO) test -count=1 -timeout 30m ./test/...

fuzz: deps
	@set -e; for f in $(FUZZ); do pkg=$${f%%:*}; fn=$${f##*:}; \
		echo "fuzz $$pkg $$fn ($(FUZZTIME))"; \
		out=$$($(GO) test -run='^$$' -fuzz="^$$fn\$$" -fuzztime=$(FUZZTIME) $$pkg 2>&1) || { echo "$$out" | tail -40; exit 1; }; \
	done

test: deps vet fuzz unit e2e

demo: deps build
	./scripts/demo.sh

bench: deps build
	./scripts/bench.sh

clean:
	rm -rf bin
