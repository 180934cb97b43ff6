#!/usr/bin/env bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#
# `make scale N=...`: the Ostinato conntrack-scale experiment in one command.
#
#   1. ns1 (10.1.1.100, more client addresses as the ports run out) and
#      ns2 (10.2.2.100) joined through a middle namespace; with FAMILY 6,
#      fd01::100 (then fd01::101, ...) and fd02::100;
#   2. xdp-conntrack between them, sized for N;
#   3. `xdp-conntrack handshake`: N SYNs, then N SYN-ACKs, then N ACKs;
#   4. `xdp-conntrack dump -f ipv4|ipv6`: exactly N ESTABLISHED [ASSURED]
#      and nothing else;
#   5. the same generator through the kernel's nf_conntrack (a bridge in the
#      middle namespace, br_netfilter handing bridged IPv4 and IPv6 to an
#      nftables `ct state` rule), counted with `conntrack -L -f ipv4|ipv6`,
#      side by side.
# Table memory is the family's table: `ct_table` (IPv4) or `ct_table6`
# (IPv6), bpftool's memlock and key + value size.
#
# Usage: scale.sh BIN N [RATE] [FAMILY]   (RATE: packets/s or max, default
#                                          max; FAMILY: 4 or 6, default 4)
set -euo pipefail

BIN=$(readlink -f "${1:?usage: $0 BIN N [RATE] [FAMILY]}")
N=${2:?usage: $0 BIN N [RATE] [FAMILY]}
RATE=${3:-max}
FAMILY=${4:-4}
case "$FAMILY" in
4) TABLE=ct_table CLIENT=10.1.1.100 SERVER=10.2.2.100 GEN6=() ;;
6) TABLE=ct_table6 CLIENT=fd01::100 SERVER=fd02::100 GEN6=(-6) ;;
*)
	echo "scale: FAMILY must be 4 or 6, not '$FAMILY'" >&2
	exit 2
	;;
esac
cd "$(dirname "$0")/.."
. scripts/lib.sh

P=xsc$$
FW=${P}fw
PIN=/sys/fs/bpf/$P
OUT=$(mktemp -d /var/tmp/xdp-conntrack-scale.XXXXXX)
ct_max_saved=

cleanup() {
	stop_tracker
	scripts/topology.sh down "$P"
	if [ -n "$ct_max_saved" ]; then
		sysctl -qw net.netfilter.nf_conntrack_max="$ct_max_saved"
	fi
	rm -rf "$OUT"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Client ports 23420..65535 per address; further addresses after that.
PORTS=$((65535 - 23420 + 1))
ADDRS=$(((N + PORTS - 1) / PORTS))
MAX_ENTRIES=$((N + N / 16 + 1024))

echo "== topology $P: ns1 ($CLIENT..+$((ADDRS - 1))) -- $FW -- ns2 ($SERVER)"
ADDR1=10.1.1.100/16 ADDR2=10.2.2.100/16 ADDR6_1=fd01::100/64 ADDR6_2=fd02::100/64 \
	scripts/topology.sh up "$P" --fw
for ((i = 1; i < ADDRS; i++)); do
	if [ "$FAMILY" = 6 ]; then
		ip -n "${P}ns1" addr add "fd01::$(printf %x $((0x100 + i)))/64" dev eth0 nodad
	else
		ip -n "${P}ns1" addr add "10.1.$((1 + (100 + i) / 256)).$(((100 + i) % 256))/16" dev eth0
	fi
done
gen=("$BIN" handshake --client-ns "${P}ns1" --server-ns "${P}ns2" "${GEN6[@]}"
	--count "$N" --rate "$RATE")

# ---- xdp-conntrack ----------------------------------------------------------
echo "== xdp-conntrack --max-entries $MAX_ENTRIES"
start_tracker "$BIN" "$P" "$OUT/tracker.log" --max-entries "$MAX_ENTRIES"

echo "== xdp-conntrack handshake --count $N --rate $RATE"
"${gen[@]}" | tee "$OUT/gen-xdp.txt"
"$BIN" dump --pin-path "$PIN" -f "ipv$FAMILY" >"$OUT/dump.txt" 2>/dev/null
"$BIN" dump --pin-path "$PIN" >"$OUT/dump-all.txt" 2>/dev/null
"$BIN" stats --pin-path "$PIN" >"$OUT/stats.txt"
bpftool map show pinned "$PIN/$TABLE" >"$OUT/map.txt"
memlock=$(sed -n 's/.*memlock \([0-9]*\)B.*/\1/p' "$OUT/map.txt")
keysize=$(sed -n 's/.*key \([0-9]*\)B.*/\1/p' "$OUT/map.txt")
valsize=$(sed -n 's/.*value \([0-9]*\)B.*/\1/p' "$OUT/map.txt")
stop_tracker

# ---- the kernel's nf_conntrack ----------------------------------------------
echo "== nf_conntrack: bridge in $FW, br_netfilter, nftables ct state rule"
ct_max_saved=$(sysctl -n net.netfilter.nf_conntrack_max 2>/dev/null || true)
if [ -z "$ct_max_saved" ]; then
	modprobe nf_conntrack
	ct_max_saved=$(sysctl -n net.netfilter.nf_conntrack_max)
fi
if [ "$ct_max_saved" -lt "$MAX_ENTRIES" ]; then
	sysctl -qw net.netfilter.nf_conntrack_max="$MAX_ENTRIES"
else
	ct_max_saved=
fi
bridge_up "$P"
conntrack_on "$P"
"${gen[@]}" | tee "$OUT/gen-kernel.txt"
ip netns exec "$FW" conntrack -L -f "ipv$FAMILY" >"$OUT/kdump.txt" 2>/dev/null || true
kinvalid=$(ip netns exec "$FW" nft list chain inet xdpct xfwd |
	sed -n 's/.*ct state invalid counter packets \([0-9]*\).*/\1/p')

# ---- report -----------------------------------------------------------------
ours_est=$(grep -c ' ESTABLISHED .*\[ASSURED\]' "$OUT/dump.txt" || true)
ours_all=$(wc -l <"$OUT/dump.txt")
# Entries of the other family (none expected).
ours_other=$(($(wc -l <"$OUT/dump-all.txt") - ours_all))
k_est=$(grep -c ' ESTABLISHED .*\[ASSURED\]' "$OUT/kdump.txt" || true)
k_all=$(grep -c '^tcp' "$OUT/kdump.txt" || true)
stat() { awk -v k="$1" '$1 == k { print $2 }' "$OUT/stats.txt"; }
hs_time() { sed -n 's/.*handshakes in \([0-9.]*\) s (\([0-9]*\) conn\/s).*/\1 s, \2 conn\/s/p' "$1"; }
slab=$(cat /sys/kernel/slab/nf_conntrack/object_size 2>/dev/null || echo '?')
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }

echo
echo "== make scale N=$N FAMILY=$FAMILY: Ostinato SYN / SYN-ACK / ACK over IPv$FAMILY, rate $RATE, $(uname -r), $(date -u +%F)"
printf '%-28s %-34s %s\n' "" "xdp-conntrack" "nf_conntrack (bridge + nft ct)"
printf '%-28s %-34s %s\n' "ESTABLISHED [ASSURED]" "$ours_est" "$k_est"
printf '%-28s %-34s %s\n' "other entries" "$((ours_all - ours_est))" "$((k_all - k_est))"
printf '%-28s %-34s %s\n' "time to establish, rate" "$(hs_time "$OUT/gen-xdp.txt")" "$(hs_time "$OUT/gen-kernel.txt")"
printf '%-28s %-34s %s\n' "table memory ($TABLE)" \
	"$(mib "$memlock") ($((memlock / MAX_ENTRIES)) B/entry x $MAX_ENTRIES)" \
	"$slab B/entry (nf_conntrack slab object)"
printf '%-28s %-34s %s\n' "key + value" \
	"$keysize + $valsize B x $MAX_ENTRIES = $(mib $(((keysize + valsize) * MAX_ENTRIES)))" ""
printf '%-28s %-34s %s\n' "drops" \
	"$(stat drops) (invalid $(stat invalid), full $(stat table_full))" "invalid $kinvalid"
echo
echo "states (xdp-conntrack):"
awk '{ print "  " $4 ($0 ~ /ASSURED/ ? " [ASSURED]" : "") ($0 ~ /UNREPLIED/ ? " [UNREPLIED]" : "") }' \
	"$OUT/dump.txt" | sort | uniq -c

if [ "$ours_est" -ne "$N" ] || [ "$ours_all" -ne "$N" ] || [ "$ours_other" -ne 0 ]; then
	echo "scale: FAILED: expected exactly $N ESTABLISHED [ASSURED] IPv$FAMILY entries" \
		"and nothing else ($ours_other of the other family)" >&2
	exit 1
fi
echo "scale: ok: all $N IPv$FAMILY connections ESTABLISHED [ASSURED]"
