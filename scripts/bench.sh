#!/usr/bin/env bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#
# `make bench`: the forwarding paths side by side, in one run, on one
# topology (ns1 -- middle namespace -- ns2):
#   (a) a Linux bridge joining the two middle-namespace veths, no XDP;
#   (b) the same bridge with nf_conntrack tracking every flow
#       (br_netfilter, bridge-nf-call-iptables=1, nftables ct state rule);
#   (c) xdp-conntrack --no-track (a pure devmap redirect: the baseline);
#   (d) xdp-conntrack as users run it.
# iperf3 TCP (1 and 4 streams) and UDP (-b 1G, 10G), REPS times each, median
# and spread; the bridge rows with default offloads and with `tx off` on the
# namespace ends (which the XDP rows need); TCP again at MTU 9000; and
# 64-byte frames (plain ACKs of 1000 established connections) from the
# live-frames generator into XDP_DROP sinks, in Mpps with loss.  Then the
# program's own cost per packet (benches/cost.rs).  Writes
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
}
# One iperf3 run; appends "path<TAB>test<TAB>value<TAB>extra" to RES.
iperf() { # path test args...
	local path=$1 test=$2
	shift 2
	local json=$OUT/iperf.json
	ip netns exec "${P}ns1" iperf3 -c 10.0.0.2 -t "$SECS" -J "$@" >"$json" || true
	/usr/bin/python3 - "$json" "$path" "$test" >>"$RES" <<'EOF'
import json, sys
path, test = sys.argv[2], sys.argv[3]
try:
    end = json.load(open(sys.argv[1]))["end"]
except Exception:
    print(f"{path}\t{test}\t0\tfailed"); sys.exit()
if "sum_received" in end:  # TCP
    print(f"{path}\t{test}\t{end['sum_received']['bits_per_second'] / 1e9:.3f}\t"
          f"{end['sum_sent'].get('retransmits', 0)}")
else:  # UDP: the receiver's rate and loss
    s = end["sum"]
    print(f"{path}\t{test}\t{s['bits_per_second'] / 1e9:.3f}\t{s['lost_percent']:.2f}")
EOF
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

mtu() { # all four veth ends
	local i
	for i in 1 2; do
		ip -n "${P}ns$i" link set eth0 mtu "$1"
		ip -n "$FW" link set "${P}veth$i" mtu "$1"
	done
}
jumbo() { # label: TCP, one stream, at MTU 9000
	local r
	mtu 9000
	for ((r = 0; r < REPS; r++)); do
		iperf "$1" "TCP MTU 9000"
	done
	mtu 1500
}

small() { # label: 64-byte frames, generator -> path -> sink
	local r
	for ((r = 0; r < REPS; r++)); do
		"$BIN" handshake --client-ns "${P}ns1" --server-ns "${P}ns2" -q \
			--client 10.0.0.1 --server 10.0.0.2 --sport $((20000 + 1000 * r)) \
			--count 1000 --flood 3000 --rate max >"$OUT/small.txt"
		awk -v path="$1" '$2 == "DATA" {
			printf "%s\t64-byte frames\t%.3f\t%.2f\n", path, $6 / $8 / 1e6, ($4 - $6) * 100 / $4
		}' "$OUT/small.txt" >>"$RES"
	done
}

echo "== topology $P" >&2
scripts/topology.sh up "$P" --fw
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
echo "== (b) bridge + nf_conntrack" >&2
conntrack_on "$P"
offloads on
run_path "(b) bridge + nf_conntrack, default offloads"
offloads off
run_path "(b) bridge + nf_conntrack, tx off"
jumbo "(b) bridge + nf_conntrack, tx off"
small "(b) bridge + nf_conntrack, tx off"
bridge_down
echo "== (c) xdp-conntrack --no-track" >&2
start_tracker "$BIN" "$P" "$OUT/tracker.log" --no-track
run_path "(c) xdp-conntrack --no-track"
jumbo "(c) xdp-conntrack --no-track"
small "(c) xdp-conntrack --no-track"
stop_tracker
echo "== (d) xdp-conntrack" >&2
start_tracker "$BIN" "$P" "$OUT/tracker.log"
run_path "(d) xdp-conntrack"
jumbo "(d) xdp-conntrack"
small "(d) xdp-conntrack"
stop_tracker

echo "== per-packet cost (BPF_PROG_TEST_RUN)" >&2
cargo bench --target x86_64-unknown-linux-gnu --locked --bench cost 2>/dev/null |
	grep '^|' >"$OUT/cost.md"

/usr/bin/python3 scripts/bench_report.py "$RES" "$OUT/cost.md" "$SECS" "$REPS" \
	docs/BENCHMARKS.md docs/bench.png
echo "== wrote docs/BENCHMARKS.md and docs/bench.png" >&2
