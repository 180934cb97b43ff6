#!/usr/bin/env python3
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""The program's cost per packet (benches/cost.rs), and with BASE=REV the
same bench built from REV, side by side in one run: the two binaries take
turns, RUNS times each, and the table gives the median of each row for both,
the difference in ns and the ratio.  Machines are noisy; only the columns
of one run compare.

usage: bench_cost.py [--base REV] [--runs N]     (as root, from the repo)
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

TARGET = "x86_64-unknown-linux-gnu"
ROW = re.compile(r"^\| (.+?) \| ([0-9.]+) \| [0-9.]+x \|$")


def build(repo, target_dir):
    """Builds the cost bench in `repo` and returns its executable."""
    env = dict(os.environ, CARGO_TARGET_DIR=target_dir)
    out = subprocess.run(
        ["cargo", "bench", "--target", TARGET, "--locked", "--bench", "cost",
         "--no-run", "--message-format=json"],
        cwd=repo, env=env, check=True, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True).stdout
    for line in out.splitlines():
        m = json.loads(line)
        if m.get("executable") and m.get("target", {}).get("name") == "cost":
            return m["executable"]
    sys.exit(f"bench_cost: no cost bench built in {repo}")


def rows(exe):
    """One run of the bench: {row name: ns per packet}."""
    out = subprocess.run([exe], check=True, stdout=subprocess.PIPE,
                         text=True).stdout
    return {m[1]: float(m[2]) for m in map(ROW.match, out.splitlines()) if m}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", help="a git revision to compare with")
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    repo = subprocess.run(["git", "rev-parse", "--show-toplevel"],
                          check=True, stdout=subprocess.PIPE,
                          text=True).stdout.strip()
    target = os.path.join(repo, "target")
    bins = {"this tree": build(repo, target)}
    tmp = None
    try:
        if a.base:
            rev = subprocess.run(["git", "rev-parse", "--short", a.base],
                                 cwd=repo, check=True, stdout=subprocess.PIPE,
                                 text=True).stdout.strip()
            tmp = tempfile.mkdtemp(prefix="xct-base-")
            subprocess.run(["git", "worktree", "add", "-q", "--detach", tmp,
                            rev], cwd=repo, check=True)
            # A target directory of its own: in one shared with this tree,
            # cargo names both benches alike and, its dep-info paths being
            # relative, may take one tree's build as fresh for the other.
            base_target = os.path.join(target, "bench-base")
            bins = {rev: build(tmp, base_target), **bins}
        runs = {name: [] for name in bins}
        for i in range(a.runs):
            # Take turns, and swap who goes first each round.
            order = list(bins) if i % 2 == 0 else list(reversed(bins))
            for name in order:
                runs[name].append(rows(bins[name]))
    finally:
        if tmp:
            subprocess.run(["git", "worktree", "remove", "--force", tmp],
                           cwd=repo)
            shutil.rmtree(tmp, ignore_errors=True)

    names = list(bins)
    labels = list(runs[names[-1]][0])

    def median(n, l):
        """None for a row the base does not have (new in this tree)."""
        v = [r[l] for r in runs[n] if l in r]
        return statistics.median(v) if v else None

    med = {n: {l: median(n, l) for l in labels} for n in names}
    head = " | ".join(f"{n} (ns, median of {a.runs})" for n in names)
    print(f"| packet | {head} |" + (" difference | ratio |" if a.base else ""))
    print("|---|" + "---:|" * (len(names) + (2 if a.base else 0)))
    for l in labels:
        cells = " | ".join("-" if med[n][l] is None else f"{med[n][l]:.1f}"
                           for n in names)
        extra = ""
        if a.base:
            old, new = med[names[0]][l], med[names[1]][l]
            extra = (" - | - |" if old is None else
                     f" {new - old:+.1f} | {new / old:.3f} |")
        print(f"| {l} | {cells} |{extra}")


if __name__ == "__main__":
    main()
