#!/usr/bin/env bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#
# Where an established-flow packet's time goes: perf samples the cost
# bench's `--profile` mode (one frame through BPF_PROG_TEST_RUN with
# repeat), once with tracking and once forwarding only, and prints the
# time per packet of each kernel symbol side by side, as a markdown table.
#
# usage: profile.sh [SECONDS]   (as root, from anywhere; 10 s per side)
set -euo pipefail

secs=${1:-10}
cd "$(dirname "$0")/.."
# The cost bench's executable, built if need be.
bench=$(cargo bench --target x86_64-unknown-linux-gnu --locked --bench cost \
	--no-run --message-format=json 2>/dev/null | /usr/bin/python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("executable") and m.get("target", {}).get("name") == "cost":
        print(m["executable"])')
[ -x "$bench" ] || { echo "profile.sh: could not build the cost bench" >&2; exit 1; }
tmp=$(mktemp -d /tmp/xct-profile.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

for mode in track no-track; do
	args=(--profile "$secs")
	[ "$mode" = no-track ] && args+=(--no-track)
	# cpu-clock counts nanoseconds, so a symbol's period is its time.
	# Sampling starts disabled; the bench enables it around its counted
	# loop through perf's control fifos, so the program's load (the
	# verifier's walk) is not charged to the packets.
	mkfifo "$tmp/$mode.ctl" "$tmp/$mode.ack"
	perf record -q -e cpu-clock -D -1 \
		--control "fifo:$tmp/$mode.ctl,$tmp/$mode.ack" -o "$tmp/$mode.data" -- \
		env XCT_PERF_CONTROL="$tmp/$mode.ctl,$tmp/$mode.ack" \
		"$bench" "${args[@]}" >"$tmp/$mode.out"
	perf report -q -i "$tmp/$mode.data" --stdio --sort sym \
		-F period,sym 2>/dev/null >"$tmp/$mode.syms"
	cat "$tmp/$mode.out"
done

python3 - "$tmp" <<'EOF'
import re, sys
tmp = sys.argv[1]

def load(mode):
    out = open(f"{tmp}/{mode}.out").read()
    packets = int(re.search(r"(\d+) packets", out).group(1))
    ns = {}
    for line in open(f"{tmp}/{mode}.syms"):
        m = re.match(r"\s*(\d+)\s+\[[k.]\]\s+(\S+)", line)
        if not m:
            continue
        sym = re.sub(r"bpf_prog_[0-9a-f]+_", "bpf_prog_", m.group(2))
        ns[sym] = ns.get(sym, 0) + int(m.group(1)) / packets
    return ns

track, fwd = load("track"), load("no-track")
rows = sorted(set(track) | set(fwd), key=lambda s: -track.get(s, 0))
print("| symbol | established ACK, ns/packet | forwarding only, ns/packet | difference |")
print("|---|---:|---:|---:|")
other_t = other_f = 0.0
for s in rows:
    t, f = track.get(s, 0.0), fwd.get(s, 0.0)
    if max(t, f) < 0.5:
        other_t += t
        other_f += f
        continue
    print(f"| {s} | {t:.1f} | {f:.1f} | {t - f:+.1f} |")
print(f"| (everything under 0.5 ns) | {other_t:.1f} | {other_f:.1f} | {other_t - other_f:+.1f} |")
tt, tf = sum(track.values()), sum(fwd.values())
print(f"| **total, sampled** | **{tt:.1f}** | **{tf:.1f}** | **{tt - tf:+.1f}** |")
EOF
