#!/usr/bin/env bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#
# `make bench-csum`: what checking checksums costs through the real
# tracker, on the bench topology (ns1 -- middle namespace -- ns2, tx
# checksum offload off on the namespace ends, as the tracker needs):
# iperf3 TCP, one stream, at MTU 1500 and 9000, and 64-byte frames (plain
# ACKs of 1000 established connections from the live-frames generator
# into XDP_DROP sinks), with checksums checked (the default) and with
# --no-checksum, taking turns REPS times; with BASE_BIN=BIN a third binary
# (e.g. the commit before checksums) takes its turn too, and with
# ALSO="FLAGS" the same binary with those tracker flags (e.g. --acct).
# Prints a markdown table of medians and [min-max].
#
# Usage: bench_csum.sh BIN [SECONDS] [REPS]    (as root; BASE_BIN=BIN, ALSO=FLAGS optional)
set -euo pipefail

BIN=$(readlink -f "${1:?usage: $0 BIN [SECONDS] [REPS]}")
SECS=${2:-5}
REPS=${3:-3}
BASE=${BASE_BIN:+$(readlink -f "$BASE_BIN")}
cd "$(dirname "$0")/.."
. scripts/lib.sh

P=xbc$$
OUT=$(mktemp -d /var/tmp/xdp-conntrack-bench-csum.XXXXXX)
RES=$OUT/results.tsv

cleanup() {
	stop_tracker
	ip netns pids "${P}ns2" 2>/dev/null | xargs -r kill 2>/dev/null || true
	scripts/topology.sh down "$P"
	rm -rf "$OUT"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# One turn of one configuration: label, binary, tracker arguments.
turn() { # label bin round args...
	local label=$1 bin=$2 round=$3
	shift 3
	start_tracker "$bin" "$P" "$OUT/tracker.log" "$@"
	iperf "$label" "TCP MTU $CUR_MTU"
	[ "$CUR_MTU" = 1500 ] && small_run "$BIN" "$label" "64-byte Mpps" 1 $((20000 + 1000 * round))
	stop_tracker
}

echo "== topology $P" >&2
scripts/topology.sh up "$P" --fw
ip netns exec "${P}ns2" iperf3 -s -D
for _ in $(seq 100); do
	ip netns exec "${P}ns2" ss -ltn | grep -q :5201 && break
	sleep 0.1
done
: >"$RES"

for CUR_MTU in 1500 9000; do
	set_mtu "$CUR_MTU"
	for ((r = 0; r < REPS; r++)); do
		echo "== MTU $CUR_MTU, round $((r + 1)) of $REPS" >&2
		turn "checksums checked" "$BIN" "$r"
		turn "--no-checksum" "$BIN" "$r" --no-checksum
		[ -z "$BASE" ] || turn "base binary" "$BASE" "$r"
		# shellcheck disable=SC2086 # ALSO is a list of flags
		[ -z "${ALSO:-}" ] || turn "$ALSO" "$BIN" "$r" $ALSO
	done
done

/usr/bin/python3 - "$RES" <<'EOF'
import statistics, sys
from collections import defaultdict
runs = defaultdict(list)
labels, tests = [], []
for line in open(sys.argv[1]):
    label, test, value, _ = line.rstrip("\n").split("\t")
    runs[label, test].append(float(value))
    labels += [label] if label not in labels else []
    tests += [test] if test not in tests else []
print("| | " + " | ".join(tests) + " |")
print("|---|" + "---:|" * len(tests))
for label in labels:
    cells = []
    for test in tests:
        v = runs[label, test]
        cells.append(f"{statistics.median(v):.2f} [{min(v):.2f}-{max(v):.2f}]" if v else "-")
    print(f"| {label} | " + " | ".join(cells) + " |")
EOF
