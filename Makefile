# xdp-conntrack: a thin wrapper around cargo and the scripts.  `make help`.
SHELL := /bin/bash
TARGET := x86_64-unknown-linux-gnu
BIN := target/$(TARGET)/release/xdp-conntrack
# A fully static binary: static libbpf/libelf/zlib (libbpf-rs "static"),
# static glibc, and no PIE so that file(1) says "statically linked".
export RUSTFLAGS := -C target-feature=+crt-static -C relocation-model=static
export LIBBPF_SYS_LIBRARY_PATH := /usr/lib/x86_64-linux-gnu
CARGO_FLAGS := --release --target $(TARGET) --locked

.DEFAULT_GOAL := build
.PHONY: help deps build install test lint demo bench scale churn bench-sweep bench-setup bench-cost bench-csum profile test-kernels vmlinux clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | \
		awk -F':.*## ' '{ printf "  make %-8s %s\n", $$1, $$2 }'

deps: ## install missing packages with apt-get (skips what is there)
	@scripts/deps.sh

build: deps ## build the static release binary
	cargo build $(CARGO_FLAGS)
	@file -L $(BIN) | grep -q 'statically linked' || \
		{ echo "$(BIN) is not statically linked"; exit 1; }

install: build ## copy the binary to /usr/local/bin
	install -m 0755 $(BIN) /usr/local/bin/xdp-conntrack

test: build lint ## run every test (as root: BPF, namespaces, nf_conntrack)
	cargo test $(CARGO_FLAGS)

lint: deps ## cargo fmt, clippy -D warnings and clang-format (kernel style)
	cargo fmt --check
	cargo clippy $(CARGO_FLAGS) --all-targets -- -D warnings
	clang-format --dry-run --Werror src/bpf/*.c src/bpf/*.h

demo: build ## ns1/ns2 topology, iperf3 TCP and UDP (IPv4), ping -6 and iperf3 -6 TCP through the tracker, dump
	scripts/demo.sh $(BIN)

SECS ?= 5
REPS ?= 3
bench: build ## bridge, bridge+nf_conntrack, --no-track, tracking: iperf3 (and -6) + 64/74-byte Mpps + per-packet cost -> docs/BENCHMARKS.md, docs/bench.png
	scripts/deps.sh bench
	scripts/bench.sh $(BIN) $(SECS) $(REPS)

N ?= 1000
RATE ?= max
FAMILY ?= 4
scale: build ## N handshakes (N=1000, FAMILY=4 or 6) through xdp-conntrack and nf_conntrack, side by side
	scripts/scale.sh $(BIN) $(N) $(RATE) $(FAMILY)

TOTAL ?= 10000000
churn: build ## TOTAL connections (10M) with the full lifecycle through a 65,536-entry table
	scripts/churn.sh $(BIN) $(TOTAL)

bench-sweep: deps ## time the in-kernel sweep against a userspace batch sweep
	cargo bench --target $(TARGET) --locked --bench sweep

bench-setup: deps ## connection setup rate of the program alone (BPF_PROG_TEST_RUN)
	cargo bench --target $(TARGET) --locked --bench setup

RUNS ?= 3
bench-cost: deps ## the program's cost per packet (BPF_PROG_TEST_RUN, repeat); BASE=REV runs REV's beside it, BENCH=cost_new a new connection finely
	scripts/bench_cost.py $(if $(BASE),--base $(BASE)) $(if $(HEAD),--head $(HEAD)) $(if $(BENCH),--bench $(BENCH)) --runs $(RUNS)

bench-csum: build ## TCP Gbit/s (MTU 1500, 9000) and 64-byte Mpps with checksums checked and --no-checksum; BASE_BIN=PATH adds another binary, ALSO=FLAGS the same with FLAGS
	scripts/deps.sh bench
	scripts/bench_csum.sh $(BIN) $(SECS) $(REPS)

profile: deps ## where an established packet's time goes: perf over BPF_PROG_TEST_RUN, by kernel symbol
	scripts/deps.sh bench
	scripts/profile.sh

test-kernels: build ## the tests inside other kernels under QEMU: KERNELS="stable backports" (6.1, 6.12); SMOKE=1 for the smoke test only
	scripts/deps.sh kernels
	scripts/test-kernels.sh $(if $(SMOKE),--smoke) $(KERNELS)

vmlinux: deps ## regenerate vmlinux/x86_64/vmlinux.h from this kernel's BTF
	bpftool btf dump file /sys/kernel/btf/vmlinux format c > vmlinux/x86_64/vmlinux.h

clean: ## remove build output
	cargo clean
