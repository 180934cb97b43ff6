#!/usr/bin/env bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#
# The one topology recipe, shared by the Makefile, the tests and the
# benchmarks:
#
#     ns1 [eth0 ADDR1 ADDR6_1] -- veth1 ==xdp-conntrack== veth2 -- [eth0 ADDR2 ADDR6_2] ns2
#
#   topology.sh up   PREFIX [--fw]   create ${PREFIX}ns1, ${PREFIX}ns2 and the
#                                    host ends ${PREFIX}veth1/2 (in the root
#                                    namespace, or in ${PREFIX}fw with --fw)
#   topology.sh down PREFIX          remove all of it (idempotent)
#
# ADDR1/ADDR2 (default 10.0.0.1/24, 10.0.0.2/24) set the namespaces' IPv4
# addresses, ADDR6_1/ADDR6_2 (default fd00::1/64, fd00::2/64; empty for
# none) their IPv6 addresses beside them, MTU (default 1500) every veth end's MTU, QUEUES (default 1) the
# most rx/tx queues each veth end may use (`ethtool -L` picks fewer).  Facts
# measured on veth that the recipe encodes:
#   - redirected XDP frames reach a namespace end only if it has GRO on or
#     an XDP program of its own;
#   - TCP needs checksum offload off (tx off) on the namespace ends, since
#     XDP_REDIRECT'ed frames skip checksum completion;
#   - a pfifo qdisc on the namespace ends stops ring overruns under parallel
#     streams;
#   - the IPv6 addresses go in with `nodad`, usable at once (no duplicate
#     address detection to wait for); neighbour discovery runs for real,
#     through whatever sits in the middle (no static neighbours).  The host
#     ends have IPv6 off: they carry no addresses of either family.
set -euo pipefail

usage() {
	echo "usage: $0 up|down PREFIX [--fw]" >&2
	exit 2
}

[ $# -ge 2 ] || usage
cmd=$1
p=$2
fw=
[ "${3-}" = "--fw" ] && fw=1
ADDR1=${ADDR1:-10.0.0.1/24}
ADDR2=${ADDR2:-10.0.0.2/24}
ADDR6_1=${ADDR6_1-fd00::1/64}
ADDR6_2=${ADDR6_2-fd00::2/64}
MTU=${MTU:-1500}
QUEUES=${QUEUES:-1}

up() {
	local host=(ip)
	if [ -n "$fw" ]; then
		ip netns add "${p}fw"
		host=(ip -n "${p}fw")
		ip -n "${p}fw" link set lo up
	fi
	local i addr addr6
	for i in 1 2; do
		addr=ADDR$i
		addr6=ADDR6_$i
		ip netns add "${p}ns$i"
		"${host[@]}" link add "${p}veth$i" mtu "$MTU" \
			numtxqueues "$QUEUES" numrxqueues "$QUEUES" type veth \
			peer name eth0 mtu "$MTU" netns "${p}ns$i" \
			numtxqueues "$QUEUES" numrxqueues "$QUEUES"
		ip -n "${p}ns$i" link set lo up
		ip -n "${p}ns$i" addr add "${!addr}" dev eth0
		if [ -n "${!addr6}" ]; then
			ip -n "${p}ns$i" addr add "${!addr6}" dev eth0 nodad
		fi
		ip netns exec "${p}ns$i" ethtool -K eth0 gro on tx off >/dev/null
		tc -n "${p}ns$i" qdisc replace dev eth0 root pfifo limit 1000
		ip -n "${p}ns$i" link set eth0 up
		# The host ends carry no addresses; keep IPv6 off on them.
		if [ -n "$fw" ]; then
			ip netns exec "${p}fw" sysctl -qw "net.ipv6.conf.${p}veth$i.disable_ipv6=1"
		else
			sysctl -qw "net.ipv6.conf.${p}veth$i.disable_ipv6=1"
		fi
		"${host[@]}" link set "${p}veth$i" up
	done
}

down() {
	local ns
	for ns in "${p}ns1" "${p}ns2" "${p}fw"; do
		ip netns del "$ns" 2>/dev/null || true
	done
	# Deleting a namespace deletes its veth ends, and with them the peers.
	ip link del "${p}veth1" 2>/dev/null || true
	ip link del "${p}veth2" 2>/dev/null || true
}

case "$cmd" in
up)
	down
	trap 'down' ERR
	up
	;;
down) down ;;
*) usage ;;
esac
