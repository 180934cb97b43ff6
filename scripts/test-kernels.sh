#!/usr/bin/env bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#
# `make test-kernels`: boot other kernels under QEMU (virtme-ng, software
# emulation: this machine has no KVM) and run the project's test binaries
# inside them, one boot per kernel.  The host's root filesystem is shared
# read-only; the guest gets the kernel package's own modules.
#
# Usage: test-kernels.sh [--smoke] [KERNEL...]
#   KERNEL is `stable` (this release's linux-image-amd64: 6.1 on Debian 12),
#   `backports` (the same from <codename>-backports: 6.12 on Debian 12) or
#   a kernel package name; the default is `stable backports`.
#   --smoke runs only the smoke test (tests/smoke.rs): load, attach, one TCP
#   handshake, dump, detach.  CI runs `--smoke stable`.  TESTS="packet e2e"
#   picks test binaries instead.
# Cache (git-ignored): .cache/kernels, .cache/venv, .cache/apt.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE=$ROOT/.cache
mkdir -p "$CACHE/kernels"

tests=${TESTS:-packet packet6 packet_csum format cli e2e handshake verbs events restart parity}
if [ "${1-}" = "--smoke" ]; then
	tests=smoke
	shift
fi
kernels=("$@")
[ ${#kernels[@]} -gt 0 ] || kernels=(stable backports)

# virtme-ng from PyPI, in a venv of its own.
if [ ! -x "$CACHE/venv/bin/vng" ]; then
	/usr/bin/python3 -m venv "$CACHE/venv"
	"$CACHE/venv/bin/pip" install -q virtme-ng
fi
export PATH=$CACHE/venv/bin:$PATH

codename=$(. /etc/os-release && echo "$VERSION_CODENAME")

# The Debian mirror this machine already uses for its release, and the key
# it is signed with: deb822 stanzas first (Debian 12's default), then
# one-line sources.
mirror() {
	local f
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -e "$f" ] || continue
		awk -v c="$codename" '
			function done_stanza() {
				if (ok && uri != "") { print uri, key; found = 1; exit }
				ok = 0; uri = ""; key = ""
			}
			/^[[:space:]]*$/ { done_stanza(); next }
			$1 == "URIs:" { uri = $2 }
			$1 == "Signed-By:" { key = $2 }
			$1 == "Suites:" { for (i = 2; i <= NF; i++) if ($i == c) ok = 1 }
			END { if (!found) done_stanza() }' "$f"
	done
	cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
		awk -v c="$codename" '$1 == "deb" {
			i = 2
			if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
			if ($(i + 1) == c) print $i
		}'
}

# A private apt state for <codename>-backports: the machine's own sources
# and package lists stay as they are.
APT=$CACHE/apt
apt_bp=(-o Dir::Etc::SourceList="$APT/sources.list" -o Dir::Etc::SourceParts="$APT/parts"
	-o Dir::State::Lists="$APT/lists" -o Dir::Cache="$APT/cache")
backports_apt() {
	[ -e "$APT/lists/.updated" ] && return
	mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial" "$APT/parts"
	local uri key
	read -r uri key < <(mirror | head -1)
	[ -n "${uri-}" ] || {
		echo "test-kernels: no apt source for $codename to take the mirror from" >&2
		exit 1
	}
	key=${key:-/usr/share/keyrings/debian-archive-keyring.gpg}
	echo "deb [signed-by=$key] $uri $codename-backports main" >"$APT/sources.list"
	apt-get "${apt_bp[@]}" update -qq
	touch "$APT/lists/.updated"
}

# The kernel image package a name stands for.
image_of() { # apt-args... -- metapackage
	apt-cache "$@" depends linux-image-amd64 |
		awk '/Depends: linux-image-[0-9]/ { print $2; exit }'
}

# The test binaries, built as CI builds them; run from the guest.
cargo test --release --target x86_64-unknown-linux-gnu --locked --no-run 2>/dev/null
cat >"$CACHE/guest.sh" <<'GUEST'
#!/bin/sh
# Runs inside the guest: no udev, so load what the tests need by hand.
modprobe veth
# The verifier runs many times slower under software emulation.
export XDP_CONNTRACK_TEST_START_SECS=300
cd "$1"
shift
# Each test's output where the host can follow it while the guest runs.
out=.cache/kernels/$(uname -r).out
mkdir -p "$out"
rc=0
for t in "$@"; do
	bin=$(ls -t target/x86_64-unknown-linux-gnu/release/deps/$t-* | grep -v '\.d$' | head -1)
	# One test at a time: 6.12 under software emulation has oopsed in the
	# BPF dispatcher when one test attached XDP while another's frames
	# ran through it.
	"$bin" --test-threads=1 >"$out/$t.out" 2>&1 || rc=1
	echo "guest: $t: $(grep 'test result' "$out/$t.out" | tail -1)"
	grep -E '^test .* \.\.\. FAILED' "$out/$t.out" | sed 's/^/guest:   /'
	# What each failure said, briefly.
	grep -h 'tracker: started in' "$out/$t.out" | head -3 | sed 's/^/guest:   /'
	awk '/^---- .* stdout ----$/ { n = 0; on = 1 } on && n++ < 40' "$out/$t.out" |
		grep -v '^ *[0-9]*: \|^ *at ' | sed 's/^/guest:   | /'
done
echo "guest: $(uname -r) rc=$rc"
GUEST
chmod +x "$CACHE/guest.sh"

status=0
for k in "${kernels[@]}"; do
	apt=()
	case "$k" in
	stable) pkg=$(image_of) ;;
	backports)
		backports_apt
		apt=("${apt_bp[@]}")
		pkg=$(image_of "${apt[@]}")
		;;
	*) pkg=$k ;;
	esac
	[ -n "$pkg" ] || {
		echo "test-kernels: no kernel image package for '$k'" >&2
		exit 1
	}
	dir=$CACHE/kernels/$pkg
	if [ ! -d "$dir/boot" ]; then
		(cd "$CACHE/kernels" && apt-get "${apt[@]}" download "$pkg" >/dev/null 2>&1) ||
			{ [ "$k" = "$pkg" ] && backports_apt &&
				(cd "$CACHE/kernels" && apt-get "${apt_bp[@]}" download "$pkg" >/dev/null 2>&1); } ||
			{
				echo "test-kernels: cannot download $pkg" >&2
				exit 1
			}
		mkdir -p "$dir"
		dpkg-deb -x "$CACHE/kernels/${pkg}"_*.deb "$dir"
		rm -f "$CACHE/kernels/${pkg}"_*.deb
	fi
	kernel=$(ls "$dir"/boot/vmlinuz-*)
	echo "== $k: $pkg, booting $(basename "$kernel") (software emulation)"
	log=$CACHE/kernels/$pkg.log
	# The checkout is handed in at its own path: a guest sees the host's
	# root, but not what lives under its /tmp or /var/tmp.
	vng --run "$kernel" --disable-kvm --memory 4G --cpus 2 --verbose \
		--rwdir=/lib/modules="$dir/lib/modules" --rwdir="$ROOT=$ROOT" \
		--exec "$CACHE/guest.sh $ROOT $tests" >"$log" 2>&1 || true
	grep '^guest:' "$log" || { echo "no result from the guest; see $log"; status=1; }
	grep -q '^guest: .* rc=0' "$log" || status=1
done
exit $status
