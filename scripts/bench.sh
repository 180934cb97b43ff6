#!/usr/bin/env bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#
# `make bench`: the forwarding paths side by side, in one run, on one
# topology (ns1 -- middle namespace -- ns2):
#   (a) a Linux bridge joining the two middle-namespace veths, no XDP;
#   (b) the same bridge with nf_conntrack tracking every flow
#       (br_netfilter, bridge-nf-call-iptables=1 and -ip6tables=1, nftables
#       inet ct state rule);
#   (c) xdp-conntrack --no-track (a pure devmap redirect: the baseline);
#   (d) xdp-conntrack as users run it.
# iperf3 TCP (1 and 4 streams) and UDP (-b 1G, 10G), REPS times each, median
# and spread; the bridge rows with default offloads and with `tx off` on the
# namespace ends (which the XDP rows need); TCP again at MTU 9000; and
# 64-byte frames (plain ACKs of 1000 established connections) from the
# live-frames generator into XDP_DROP sinks, in Mpps with loss, on one
# queue and then on two (`ethtool -L rx 2 tx 2` on every veth end, two
# generator threads on the two CPUs), beside the scaling of two plain
# CPU-bound loops on the same CPUs for reference.  Beside those IPv4 rows,
# IPv6 ones through the same paths (the bridge's with tx off): iperf3 -6 TCP,
# one stream, and the smallest IPv6 TCP frames (14 + 40 + 20 = 74 bytes) on
# one queue.  Then the program's own
# cost per packet (benches/cost.rs).  Writes
# docs/BENCHMARKS.md's bench section and docs/bench.png.
#
# Usage: bench.sh BIN [SECONDS] [REPS]
set -euo pipefail

BIN=$(readlink -f "${1:?usage: $0 BIN [SECONDS] [REPS]}")
SECS=${2:-5}
REPS=${3:-3}
cd "$(dirname "$0")/.."
. scripts/lib.sh

P=xbe$$
FW=${P}fw
OUT=$(mktemp -d /var/tmp/xdp-conntrack-bench.XXXXXX)
RES=$OUT/results.tsv

cleanup() {
	stop_tracker
	ip netns pids "${P}ns2" 2>/dev/null | xargs -r kill 2>/dev/null || true
	scripts/topology.sh down "$P"
	rm -rf "$OUT"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

offloads() { # on|off: checksum offload on the namespace ends
	for i in 1 2; do
		ip netns exec "${P}ns$i" ethtool -K eth0 tx "$1" >/dev/null
	done
}
bridge_down() {
	ip -n "$FW" link del br0 2>/dev/null || true
	ip netns exec "$FW" nft flush ruleset
	ip netns exec "$FW" sysctl -qw net.bridge.bridge-nf-call-iptables=0
	ip netns exec "$FW" sysctl -qw net.bridge.bridge-nf-call-ip6tables=0
}
run_path() { # label
	local label=$1 r
	for ((r = 0; r < REPS; r++)); do
		iperf "$label" "TCP 1 stream"
		iperf "$label" "TCP 4 streams" -P 4
		iperf "$label" "UDP -b 1G" -u -b 1G -l 1400
		iperf "$label" "UDP -b 10G" -u -b 10G -l 1400
	done
	echo "   $label done" >&2
}

jumbo() { # label: TCP, one stream, at MTU 9000
	local r
	set_mtu 9000
	for ((r = 0; r < REPS; r++)); do
		iperf "$1" "TCP MTU 9000"
	done
	set_mtu 1500
}

ipv6() { # label: IPv6 TCP, one stream, and 74-byte frames on one queue
	local r
	for ((r = 0; r < REPS; r++)); do
		iperf6 "$1" "IPv6 TCP 1 stream"
		small_run "$BIN" "$1" "IPv6 74-byte frames" 1 $((30000 + 1000 * r)) 6
	done
}

small() { # label [threads]: 64-byte frames, generator -> path -> sink
	local r threads=${2:-1} test="64-byte frames"
	[ "$threads" -gt 1 ] && test="64-byte frames, $threads queues"
	for ((r = 0; r < REPS; r++)); do
		small_run "$BIN" "$1" "$test" "$threads" $((20000 + 1000 * r))
	done
}
# Rx/tx queues on all four veth ends.  Only while no XDP program is
# attached to them: veth refuses XDP on a peer with more tx queues than it
# has rx queues, and a queue added under a program does not carry XDP.
channels() {
	local i
	for i in 1 2; do
		ip netns exec "$FW" ethtool -L "${P}veth$i" rx "$1" tx "$1"
		ip netns exec "${P}ns$i" ethtool -L eth0 rx "$1" tx "$1"
	done
}
small2() { # label [tracker args]: two queues, two generator threads
	local label=$1 xdp=
	shift
	case "$label" in "(c)"* | "(d)"*) xdp=1 ;; esac
	[ -z "$xdp" ] || stop_tracker
	channels 2
	[ -z "$xdp" ] || start_tracker "$BIN" "$P" "$OUT/tracker.log" "$@"
	small "$label" 2
	[ -z "$xdp" ] || stop_tracker
	channels 1
}
# Two CPU-bound loops on the two CPUs against one: what the machine itself
# gives a second core (vCPUs share their host), median of 5.
cpu_scaling() {
	/usr/bin/python3 - <<'EOF' >>"$RES"
import os, time
from multiprocessing import Pool

def spin(cpu):
    os.sched_setaffinity(0, {cpu})
    t, x = time.perf_counter(), 0
    for i in range(10_000_000):
        x += i
    return time.perf_counter() - t

cpus = sorted(os.sched_getaffinity(0))[:2]
for _ in range(5):
    with Pool(2) as pool:
        one = pool.map(spin, cpus[:1])[0]
        two = max(pool.map(spin, cpus))
    print(f"(reference) two CPU-bound loops\tscaling\t{2 * one / two:.3f}\t0")
EOF
}

echo "== topology $P" >&2
QUEUES=2 scripts/topology.sh up "$P" --fw
channels 1
ip netns exec "${P}ns2" iperf3 -s -D
for _ in $(seq 100); do
	ip netns exec "${P}ns2" ss -ltn | grep -q :5201 && break
	sleep 0.1
done
: >"$RES"

echo "== (a) bridge" >&2
bridge_up "$P"
offloads on
run_path "(a) bridge, default offloads"
offloads off
run_path "(a) bridge, tx off"
jumbo "(a) bridge, tx off"
small "(a) bridge, tx off"
small2 "(a) bridge, tx off"
ipv6 "(a) bridge, tx off"
echo "== (b) bridge + nf_conntrack" >&2
conntrack_on "$P"
offloads on
run_path "(b) bridge + nf_conntrack, default offloads"
offloads off
run_path "(b) bridge + nf_conntrack, tx off"
jumbo "(b) bridge + nf_conntrack, tx off"
small "(b) bridge + nf_conntrack, tx off"
small2 "(b) bridge + nf_conntrack, tx off"
ipv6 "(b) bridge + nf_conntrack, tx off"
bridge_down
echo "== (c) xdp-conntrack --no-track" >&2
start_tracker "$BIN" "$P" "$OUT/tracker.log" --no-track
run_path "(c) xdp-conntrack --no-track"
jumbo "(c) xdp-conntrack --no-track"
small "(c) xdp-conntrack --no-track"
small2 "(c) xdp-conntrack --no-track" --no-track
start_tracker "$BIN" "$P" "$OUT/tracker.log" --no-track
ipv6 "(c) xdp-conntrack --no-track"
stop_tracker
echo "== (d) xdp-conntrack" >&2
start_tracker "$BIN" "$P" "$OUT/tracker.log"
run_path "(d) xdp-conntrack"
jumbo "(d) xdp-conntrack"
small "(d) xdp-conntrack"
small2 "(d) xdp-conntrack"
start_tracker "$BIN" "$P" "$OUT/tracker.log"
ipv6 "(d) xdp-conntrack"
stop_tracker
cpu_scaling

echo "== per-packet cost (BPF_PROG_TEST_RUN)" >&2
cargo bench --target x86_64-unknown-linux-gnu --locked --bench cost 2>/dev/null |
	grep '^|' >"$OUT/cost.md"
echo "== profile of the established path (perf)" >&2
scripts/profile.sh 10 | grep '^|' >"$OUT/profile.md"

/usr/bin/python3 scripts/bench_report.py "$RES" "$OUT/cost.md" "$OUT/profile.md" "$SECS" "$REPS" \
	docs/BENCHMARKS.md docs/bench.png
echo "== wrote docs/BENCHMARKS.md and docs/bench.png" >&2
