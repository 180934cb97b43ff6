#!/usr/bin/env bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#
# `make test-kernels`: boot other kernels under QEMU (virtme-ng, software
# emulation: this machine has no KVM) and run the project's test binaries
# inside them, one boot per kernel.  The host's root filesystem is shared
# read-only; the guest gets the kernel package's own modules.
#
# Usage: test-kernels.sh [KERNEL_PACKAGE...]   (default: Debian 12's 6.1)
# Cache (git-ignored): .cache/kernels, .cache/venv.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE=$ROOT/.cache
mkdir -p "$CACHE/kernels"

# virtme-ng from PyPI, in a venv of its own.
if [ ! -x "$CACHE/venv/bin/vng" ]; then
	/usr/bin/python3 -m venv "$CACHE/venv"
	"$CACHE/venv/bin/pip" install -q virtme-ng
fi
export PATH=$CACHE/venv/bin:$PATH

pkgs=("$@")
if [ ${#pkgs[@]} -eq 0 ]; then
	# The plain amd64 flavour: cloud-amd64 lacks 9p for the shared root.
	pkgs=("$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')")
fi

# The test binaries, built as CI builds them; run from the guest.
cargo test --release --target x86_64-unknown-linux-gnu --locked --no-run 2>/dev/null
cat >"$CACHE/guest.sh" <<'GUEST'
#!/bin/sh
# Runs inside the guest: no udev, so load what the tests need by hand.
modprobe veth
cd "$1"
rc=0
for t in packet cli e2e handshake parity; do
	bin=$(ls -t target/x86_64-unknown-linux-gnu/release/deps/$t-* | grep -v '\.d$' | head -1)
	"$bin" --test-threads=2 >"/tmp/$t.out" 2>&1 || rc=1
	echo "guest: $t: $(grep 'test result' "/tmp/$t.out" | tail -1)"
	grep -E '^test .* \.\.\. FAILED' "/tmp/$t.out" | sed 's/^/guest:   /'
done
echo "guest: rc=$rc"
GUEST
chmod +x "$CACHE/guest.sh"

status=0
for pkg in "${pkgs[@]}"; do
	dir=$CACHE/kernels/$pkg
	if [ ! -d "$dir/boot" ]; then
		(cd "$CACHE/kernels" && apt-get download "$pkg" >/dev/null 2>&1)
		mkdir -p "$dir"
		dpkg-deb -x "$CACHE/kernels/${pkg}"_*.deb "$dir"
		rm -f "$CACHE/kernels/${pkg}"_*.deb
	fi
	kernel=$(ls "$dir"/boot/vmlinuz-*)
	echo "== $pkg: booting $(basename "$kernel") (software emulation)"
	log=$CACHE/kernels/$pkg.log
	vng --run "$kernel" --disable-kvm --memory 4G --cpus 2 --verbose \
		--rwdir=/lib/modules="$dir/lib/modules" \
		--exec "$CACHE/guest.sh $ROOT" >"$log" 2>&1 || true
	grep '^guest:' "$log" || { echo "no result from the guest; see $log"; status=1; }
	grep -q '^guest: rc=0' "$log" || status=1
done
exit $status
