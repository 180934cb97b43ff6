#!/usr/bin/env bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#
# Installs, with apt-get, what building, testing and the demo need, and
# skips what is already there.  Safe to run again and again.
# `deps.sh bench` also installs what `make bench` draws its chart with, and
# `deps.sh kernels` what `make test-kernels` boots kernels with.
set -euo pipefail

pkgs=(
	# build: the BPF compiler and what static libbpf links against
	clang llvm libelf-dev zlib1g-dev libzstd-dev pkg-config make file
	# `make vmlinux`, `make lint`
	bpftool clang-format
	# namespaces, veth, traffic and the kernel's own conntrack for parity
	iproute2 ethtool iperf3 iputils-ping conntrack nftables util-linux procps
)

case "${1-}" in
bench) pkgs+=(python3 python3-matplotlib linux-perf) ;;
kernels) pkgs+=(python3 python3-venv qemu-system-x86 busybox-static kmod) ;;
esac

missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' ||
		missing+=("$p")
done

if ((${#missing[@]})); then
	echo "deps: installing ${missing[*]}"
	sudo=()
	[ "$(id -u)" -eq 0 ] || sudo=(sudo)
	"${sudo[@]}" apt-get update -qq
	DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq \
		--no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
	echo "deps: cargo is missing; install a Rust toolchain (rustup) first" >&2
	exit 1
fi
