#!/usr/bin/env python3
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Turns `make bench` measurements into docs/BENCHMARKS.md's bench section
and a chart.  Usage: bench_report.py RESULTS.tsv COST.md PROFILE.md SECS REPS MD PNG"""

import datetime
import os
import platform
import statistics
import sys
from collections import OrderedDict

res_path, cost_path, profile_path, secs, reps, md_path, png_path = sys.argv[1:8]
SMALL = ["64-byte frames", "64-byte frames, 2 queues"]
TESTS = ["TCP 1 stream", "TCP 4 streams", "UDP -b 1G", "UDP -b 10G", "TCP MTU 9000"] + SMALL
# The IPv6 rows, each beside its IPv4 counterpart of the same run.
SIX = [("TCP 1 stream", "IPv6 TCP 1 stream"), ("64-byte frames", "IPv6 74-byte frames")]
UNIT = {t: "Mpps" if t in SMALL else "Gbit/s" for t in TESTS}
UNIT["IPv6 TCP 1 stream"] = "Gbit/s"
UNIT["IPv6 74-byte frames"] = "Mpps"
REF = "(reference) two CPU-bound loops"

runs = OrderedDict()  # path -> test -> [(value, extra)]
for line in open(res_path):
    path, test, value, extra = line.rstrip("\n").split("\t")
    runs.setdefault(path, {}).setdefault(test, []).append((float(value), extra))


def cell(path, test):
    vals = [v for v, _ in runs[path].get(test, [])]
    if not vals:
        return "n/a", "n/a", None
    med = statistics.median(vals)
    extras = [e for _, e in runs[path][test]]
    try:
        extra = f"{statistics.median(float(e) for e in extras):g}"
    except ValueError:
        extra = "failed"
    return f"{med:.2f} [{min(vals):.2f}-{max(vals):.2f}]", extra, med


lines = []
head = "| path | " + " | ".join(
    f"{t} {UNIT[t]} | {'retr' if t.startswith('TCP') else 'loss %'}" for t in TESTS
) + " |"
lines.append(head)
lines.append("|---|" + "---:|---:|" * len(TESTS))
medians = {}
ref = [v for v, _ in runs.pop(REF, {}).get("scaling", [])]
for path in runs:
    row = [path]
    for t in TESTS:
        text, extra, med = cell(path, t)
        medians[(path, t)] = med
        row += [text, extra]
    lines.append("| " + " | ".join(row) + " |")

six = []
six.append(
    "| path | "
    + " | ".join(f"{t} {UNIT[t]} | {'retr' if 'TCP' in t else 'loss %'}" for pair in SIX for t in pair)
    + " |"
)
six.append("|---|" + "---:|---:|" * (2 * len(SIX)))
for path in runs:
    if not any(runs[path].get(t6) for _, t6 in SIX):
        continue
    row = [path]
    for pair in SIX:
        for t in pair:
            text, extra, med = cell(path, t)
            medians[(path, t)] = med
            row += [text, extra]
    six.append("| " + " | ".join(row) + " |")


def ratio(a, b, t):
    x, y = medians.get((a, t)), medians.get((b, t))
    return f"{x / y:.2f}x" if x and y else "n/a"


def scale(p):
    x, y = medians.get((p, SMALL[1])), medians.get((p, SMALL[0]))
    return f"{x / y:.2f}x" if x and y else "n/a"


C = "(c) xdp-conntrack --no-track"
D = "(d) xdp-conntrack"
B = "(b) bridge + nf_conntrack, tx off"
ratios = [
    f"- (d) / (c), tracking's cost: TCP 1 stream {ratio(D, C, 'TCP 1 stream')}, "
    f"TCP 4 streams {ratio(D, C, 'TCP 4 streams')}",
    f"- (d) / (b) at the same offloads (tx off): TCP 1 stream {ratio(D, B, 'TCP 1 stream')}, "
    f"TCP 4 streams {ratio(D, B, 'TCP 4 streams')}, TCP MTU 9000 {ratio(D, B, 'TCP MTU 9000')}, "
    f"64-byte Mpps {ratio(D, B, '64-byte frames')}",
    f"- (d) / (c) in 64-byte Mpps: {ratio(D, C, '64-byte frames')}",
    f"- IPv6: (d) / (c) TCP 1 stream {ratio(D, C, 'IPv6 TCP 1 stream')}, "
    f"74-byte Mpps {ratio(D, C, 'IPv6 74-byte frames')}; (d) / (b) TCP 1 stream "
    f"{ratio(D, B, 'IPv6 TCP 1 stream')}, 74-byte Mpps {ratio(D, B, 'IPv6 74-byte frames')}",
    "- two queues on two CPUs / one queue, 64-byte Mpps: "
    + ", ".join(
        f"{p.split(' ')[0]} {scale(p)}" for p in runs if medians.get((p, SMALL[1]))
    ),
    "- for reference, two CPU-bound loops on the two vCPUs against one: "
    + (
        f"{statistics.median(ref):.2f}x [{min(ref):.2f}-{max(ref):.2f}] (median of {len(ref)}),"
        " the second core the machine itself gives"
        if ref
        else "n/a"
    ),
]

cost = open(cost_path).read().strip()
profile = open(profile_path).read().strip()
today = datetime.date.today().isoformat()
section = f"""<!-- bench:start -->
## `make bench`: the forwarding paths side by side

Command: `make bench` (iperf3 for {secs} s per run, {reps} runs per cell;
median [min-max]). Machine: {platform.node() and 'Debian 12 VM'}, kernel
{platform.release()}, {os.cpu_count()} vCPUs; {today}. One topology, one run:
ns1 (10.0.0.1) -- middle namespace -- ns2 (10.0.0.2). "default offloads"
leaves checksum offload on in the namespaces; "tx off" turns it off there,
which the XDP paths need for TCP. Traffic flows ns1 -> ns2; UDP figures are
what the receiver got.

{chr(10).join(lines)}

IPv6 through the same paths in the same run (ns1 fd00::1, ns2 fd00::2;
the bridge's rows with tx off), each beside its IPv4 counterpart: iperf3
-6 TCP, one stream, and the smallest IPv6 TCP frames (plain ACKs, 14 + 40
+ 20 = 74 bytes) from the generator on one queue:

{chr(10).join(six)}

Ratios in this run:
{chr(10).join(ratios)}

![throughput by path](bench.png)

### The program's own cost per packet

BPF_PROG_TEST_RUN with `repeat` (`make bench-cost`, part of `make bench`):

{cost}

### Where an established packet's time goes

`make profile` (part of `make bench`): perf samples the same
BPF_PROG_TEST_RUN loop, the established ACK at 1k entries against
forwarding only, and splits each packet's time by kernel symbol. Both
columns carry the test harness's own loop (bpf_test_run and friends, about
half of the forwarding-only time); the difference column is tracking's
cost. Under this CPU's SRSO "safe RET" and retpoline mitigations every
function return is expensive, and perf charges a return's stall to the
instruction after the call, in the caller: the program's own line includes
the returns from the helpers it calls.

{profile}
<!-- bench:end -->"""

try:
    doc = open(md_path).read()
except FileNotFoundError:
    doc = "# Benchmarks\n"
start, end = doc.find("<!-- bench:start -->"), doc.find("<!-- bench:end -->")
if start >= 0 and end > start:
    doc = doc[:start] + section + doc[end + len("<!-- bench:end -->"):]
else:
    doc = doc.rstrip("\n") + "\n\n" + section + "\n"
open(md_path, "w").write(doc)

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

GBIT = [t for t in TESTS if UNIT[t] == "Gbit/s"]
fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [5, 2]})
paths = list(runs)
width = 0.8 / len(paths)
for i, path in enumerate(paths):
    ys = [medians.get((path, t)) or 0 for t in GBIT]
    xs = [j + i * width for j in range(len(GBIT))]
    ax.bar(xs, ys, width, label=path)
    ax2.bar(
        [j + i * width for j in range(len(SMALL))],
        [medians.get((path, t)) or 0 for t in SMALL],
        width,
    )
ax.set_xticks([j + 0.4 - width / 2 for j in range(len(GBIT))])
ax.set_xticklabels(GBIT)
ax.set_ylabel("Gbit/s (median)")
ax2.set_xticks([j + 0.4 - width / 2 for j in range(len(SMALL))])
ax2.set_xticklabels(["64 B, 1 queue", "64 B, 2 queues"])
ax2.set_ylabel("Mpps (median)")
ax2.grid(axis="y", alpha=0.3)
fig.suptitle(f"xdp-conntrack vs Linux bridge and nf_conntrack, ns1 -> ns2 over veth ({today})")
ax.legend(fontsize=8)
ax.grid(axis="y", alpha=0.3)
fig.tight_layout()
fig.savefig(png_path, dpi=100)
