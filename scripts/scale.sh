#!/usr/bin/env bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#
# `make scale N=...`: the Ostinato conntrack-scale experiment in one command.
#
#   1. ns1 (10.1.1.100, more client addresses as the ports run out) and
#      ns2 (10.2.2.100) joined through a middle namespace;
#   2. xdp-conntrack between them, sized for N;
#   3. `xdp-conntrack handshake`: N SYNs, then N SYN-ACKs, then N ACKs;
#   4. `xdp-conntrack dump`: exactly N ESTABLISHED [ASSURED] and nothing else;
#   5. the same generator through the kernel's nf_conntrack (a bridge in the
#      middle namespace, br_netfilter handing bridged IPv4 to an nftables
#      `ct state` rule), counted with
#      `conntrack -L`, side by side.
#
# Usage: scale.sh BIN N [RATE]        (RATE: packets/s or max; default max)
set -euo pipefail

BIN=$(readlink -f "${1:?usage: $0 BIN N [RATE]}")
N=${2:?usage: $0 BIN N [RATE]}
RATE=${3:-max}
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

echo "== topology $P: ns1 (10.1.1.100..+$((ADDRS - 1))) -- $FW -- ns2 (10.2.2.100)"
ADDR1=10.1.1.100/16 ADDR2=10.2.2.100/16 scripts/topology.sh up "$P" --fw
for ((i = 1; i < ADDRS; i++)); do
	ip -n "${P}ns1" addr add "10.1.$((1 + (100 + i) / 256)).$(((100 + i) % 256))/16" dev eth0
done
gen=("$BIN" handshake --client-ns "${P}ns1" --server-ns "${P}ns2" --count "$N" --rate "$RATE")

# ---- xdp-conntrack ----------------------------------------------------------
echo "== xdp-conntrack --max-entries $MAX_ENTRIES"
start_tracker "$BIN" "$P" "$OUT/tracker.log" --max-entries "$MAX_ENTRIES"

echo "== xdp-conntrack handshake --count $N --rate $RATE"
"${gen[@]}" | tee "$OUT/gen-xdp.txt"
"$BIN" dump --pin-path "$PIN" >"$OUT/dump.txt" 2>/dev/null
"$BIN" stats --pin-path "$PIN" >"$OUT/stats.txt"
memlock=$(bpftool map show pinned "$PIN/ct_table" | sed -n 's/.*memlock \([0-9]*\)B.*/\1/p')
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
ip netns exec "$FW" conntrack -L >"$OUT/kdump.txt" 2>/dev/null || true
kinvalid=$(ip netns exec "$FW" nft list chain ip xdpct xfwd |
	sed -n 's/.*ct state invalid counter packets \([0-9]*\).*/\1/p')

# ---- report -----------------------------------------------------------------
ours_est=$(grep -c ' ESTABLISHED .*\[ASSURED\]' "$OUT/dump.txt" || true)
ours_all=$(wc -l <"$OUT/dump.txt")
k_est=$(grep -c ' ESTABLISHED .*\[ASSURED\]' "$OUT/kdump.txt" || true)
k_all=$(grep -c '^tcp' "$OUT/kdump.txt" || true)
stat() { awk -v k="$1" '$1 == k { print $2 }' "$OUT/stats.txt"; }
hs_time() { sed -n 's/.*handshakes in \([0-9.]*\) s (\([0-9]*\) conn\/s).*/\1 s, \2 conn\/s/p' "$1"; }
slab=$(cat /sys/kernel/slab/nf_conntrack/object_size 2>/dev/null || echo '?')

echo
echo "== make scale N=$N: Ostinato SYN / SYN-ACK / ACK, rate $RATE, $(uname -r), $(date -u +%F)"
printf '%-28s %-34s %s\n' "" "xdp-conntrack" "nf_conntrack (bridge + nft ct)"
printf '%-28s %-34s %s\n' "ESTABLISHED [ASSURED]" "$ours_est" "$k_est"
printf '%-28s %-34s %s\n' "other entries" "$((ours_all - ours_est))" "$((k_all - k_est))"
printf '%-28s %-34s %s\n' "time to establish, rate" "$(hs_time "$OUT/gen-xdp.txt")" "$(hs_time "$OUT/gen-kernel.txt")"
printf '%-28s %-34s %s\n' "table memory" \
	"$((memlock / 1048576)) MiB ($((memlock / MAX_ENTRIES)) B/entry x $MAX_ENTRIES)" \
	"$slab B/entry (nf_conntrack slab object)"
printf '%-28s %-34s %s\n' "drops" \
	"$(stat drops) (invalid $(stat invalid), full $(stat table_full))" "invalid $kinvalid"
echo
echo "states (xdp-conntrack):"
awk '{ print "  " $4 ($0 ~ /ASSURED/ ? " [ASSURED]" : "") ($0 ~ /UNREPLIED/ ? " [UNREPLIED]" : "") }' \
	"$OUT/dump.txt" | sort | uniq -c

if [ "$ours_est" -ne "$N" ] || [ "$ours_all" -ne "$N" ]; then
	echo "scale: FAILED: expected exactly $N ESTABLISHED [ASSURED] entries" >&2
	exit 1
fi
echo "scale: ok: all $N connections ESTABLISHED [ASSURED]"
