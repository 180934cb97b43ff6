#!/usr/bin/env bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#
# `make demo`: the three-terminal workflow, end to end.  Creates ns1
# (10.0.0.1, fd00::1) and ns2 (10.0.0.2, fd00::2) joined by veth1/veth2,
# runs xdp-conntrack on veth1/veth2, pushes iperf3 TCP for 10 s and UDP at
# 1 Gbit/s through it over IPv4, then pings over IPv6 (neighbour discovery
# crossing the tracker first) and sends a short iperf3 TCP transfer over
# IPv6, prints throughput, retransmits and loss, then the connection table
# of both families, and tears everything down again (also on Ctrl-C or
# failure).
set -euo pipefail

BIN=${1:?usage: $0 path/to/xdp-conntrack}
BIN=$(readlink -f "$BIN")
cd "$(dirname "$0")/.."
SECS=${DEMO_SECS:-10}
SECS6=${DEMO_SECS6:-3}
PIN=/sys/fs/bpf/xdp-conntrack-demo
LOG=$(mktemp -t xdp-conntrack-demo.XXXXXX)
tracker=

for ns in ns1 ns2; do
	if ip netns list | grep -qw "$ns"; then
		echo "demo: network namespace $ns already exists; remove it first" >&2
		exit 1
	fi
done
for dev in veth1 veth2; do
	if ip link show "$dev" >/dev/null 2>&1; then
		echo "demo: interface $dev already exists; remove it first" >&2
		exit 1
	fi
done

cleanup() {
	if [ -n "$tracker" ] && kill -0 "$tracker" 2>/dev/null; then
		kill -INT "$tracker"
		wait "$tracker" || true
	fi
	ip netns pids ns2 2>/dev/null | xargs -r kill 2>/dev/null || true
	scripts/topology.sh down ""
	rm -f "$LOG" "$LOG.tcp" "$LOG.udp" "$LOG.tcp6"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Wait for a condition, polling, for at most $1 tenths of a second.
wait_until() {
	local tries=$1
	shift
	until "$@" >/dev/null 2>&1; do
		tries=$((tries - 1))
		[ "$tries" -gt 0 ] || return 1
		sleep 0.1
	done
}

echo "== topology: ns1 (10.0.0.1, fd00::1) -- veth1 ==xdp-conntrack== veth2 -- ns2 (10.0.0.2, fd00::2)"
scripts/topology.sh up ""

echo "== xdp-conntrack -1 veth1 -2 veth2"
"$BIN" -1 veth1 -2 veth2 -q --pin-path "$PIN" 2>"$LOG" &
tracker=$!
if ! wait_until 100 grep -q forwarding "$LOG"; then
	cat "$LOG" >&2
	exit 1
fi
cat "$LOG"

ip netns exec ns2 iperf3 -s -D
wait_until 100 bash -c "ip netns exec ns2 ss -ltn | grep -q :5201"

echo "== iperf3 TCP, ${SECS} s: ns1 -> ns2"
ip netns exec ns1 iperf3 -c 10.0.0.2 -t "$SECS" -f g | tee "$LOG.tcp"
echo "== iperf3 UDP at 1 Gbit/s, ${SECS} s: ns1 -> ns2"
ip netns exec ns1 iperf3 -c 10.0.0.2 -u -b 1G -t "$SECS" -f m | tee "$LOG.udp"

echo "== ping -6 fd00::2: ns1 -> ns2 (neighbour discovery first, through the tracker)"
ip netns exec ns1 ping -6 -c 3 -i 0.2 -W 2 fd00::2
echo "== iperf3 -6 TCP, ${SECS6} s: ns1 -> ns2"
ip netns exec ns1 iperf3 -6 -c fd00::2 -t "$SECS6" -f g | tee "$LOG.tcp6"

echo "== results"
tcp_results() { # label file
	awk -v l="$1" '/sender$/ { printf "%s: %s %s (sender), %s retransmits\n", l, $7, $8, $9 }
	     /receiver$/ { printf "%s: %s %s (receiver)\n", l, $7, $8 }' "$2"
}
tcp_results TCP "$LOG.tcp"
awk '/receiver$/ { printf "UDP: %s %s received, loss %s %s\n", $7, $8, $11, $12 }' "$LOG.udp"
tcp_results "TCP over IPv6" "$LOG.tcp6"
rm -f "$LOG.tcp" "$LOG.udp" "$LOG.tcp6"

echo "== xdp-conntrack dump -o extended (both families)"
"$BIN" dump --pin-path "$PIN" -o extended
