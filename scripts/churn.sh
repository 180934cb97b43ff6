#!/usr/bin/env bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#
# `make churn`: TOTAL connections through a 65,536-entry table, each with
# the full lifecycle (SYN, SYN-ACK, ACK, FIN/ACK both ways, last ACK), in
# rounds of PER_ROUND connections.  TIME_WAIT is 1 s and the sweep runs
# every 100 ms, so the table drains as fast as it fills.  It checks that
# every packet of every round crossed the tracker (no live connection
# lost), that no connection was ever refused for a full table, and prints
# how much the sweep removed.
#
# RATE (packets/s, 6 per connection) must stay below what the table can
# hold for TIME_WAIT plus a sweep: about 65536 / 1.1 s connections a second.
#
# Usage: churn.sh BIN [TOTAL] [PER_ROUND] [RATE]
set -euo pipefail

BIN=$(readlink -f "${1:?usage: $0 BIN [TOTAL] [PER_ROUND] [RATE]}")
TOTAL=${2:-10000000}
PER_ROUND=${3:-16384}
RATE=${4:-240000}
TABLE=65536
ROUNDS=$(((TOTAL + PER_ROUND - 1) / PER_ROUND))
cd "$(dirname "$0")/.."
. scripts/lib.sh

P=xch$$
PIN=/sys/fs/bpf/$P
OUT=$(mktemp -d /var/tmp/xdp-conntrack-churn.XXXXXX)
cleanup() {
	stop_tracker
	scripts/topology.sh down "$P"
	rm -rf "$OUT"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== topology $P: ns1 (10.1.1.100..103) -- ${P}fw -- ns2 (10.2.2.100)"
ADDR1=10.1.1.100/24 ADDR2=10.2.2.100/24 scripts/topology.sh up "$P" --fw
for a in 101 102 103; do
	ip -n "${P}ns1" addr add "10.1.1.$a/24" dev eth0
done

echo "== xdp-conntrack --max-entries $TABLE --timeout time_wait=1 --sweep-interval 100"
start_tracker "$BIN" "$P" "$OUT/tracker.log" \
	--max-entries "$TABLE" --timeout time_wait=1 --sweep-interval 100

echo "== handshake --lifecycle full --count $PER_ROUND --rounds $ROUNDS --rate $RATE"
"$BIN" handshake --client-ns "${P}ns1" --server-ns "${P}ns2" --lifecycle full \
	--count "$PER_ROUND" --rounds "$ROUNDS" --rate "$RATE" | tee "$OUT/gen.txt"
"$BIN" stats --pin-path "$PIN" >"$OUT/stats.txt"
"$BIN" dump --pin-path "$PIN" >"$OUT/dump.txt" 2>/dev/null
stat() { awk -v k="$1" '$1 == k { print $2 }' "$OUT/stats.txt"; }

echo
echo "== make churn: $((ROUNDS * PER_ROUND)) connections, full lifecycle, table $TABLE, $(uname -r), $(date -u +%F)"
echo "new connections      $(stat new)"
echo "table full drops     $(stat table_full)"
echo "invalid drops        $(stat invalid)"
echo "swept (idle, removed by the sweep)     $(stat swept)"
echo "expired (replaced by a packet)         $(stat expired)"
echo "reopened/closed by the state machine   $(stat closed)"
echo "entries left         $(wc -l <"$OUT/dump.txt")"
awk '{ print "  " $4 ($0 ~ /ASSURED/ ? " [ASSURED]" : "") }' "$OUT/dump.txt" | sort | uniq -c

lost=$(awk '/delivered/ { if ($4 != $6) bad++ } END { print bad + 0 }' "$OUT/gen.txt")
if [ "$(stat table_full)" -ne 0 ] || [ "$(stat invalid)" -ne 0 ] || [ "$lost" -ne 0 ]; then
	echo "churn: FAILED: packets were dropped or lost" >&2
	exit 1
fi
echo "churn: ok: every packet of every connection crossed; the table never refused one"
