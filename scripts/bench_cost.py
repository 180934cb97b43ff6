#!/usr/bin/env python3
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""The program's cost per packet (benches/cost.rs, or --bench NAME), and
with BASE=REV the same bench built from REV, side by side in one run: the
two binaries take turns, RUNS times each, and the table gives the median of
each row for both, the difference in ns and the ratio.  Machines are noisy;
only the columns of one run compare.  A bench that REV lacks is taken from
this tree into REV's worktree, so both programs run under one harness.

usage: bench_cost.py [--base REV] [--head REV] [--runs N] [--bench NAME]
       (as root, from the repo; --head measures REV instead of this tree)
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


def build(repo, target_dir, keep, bench):
    """Builds `bench` in `repo` and returns a copy of its executable under
    `keep`: two trees of one package build to the same file name."""
    env = dict(os.environ, CARGO_TARGET_DIR=target_dir)
    out = subprocess.run(
        ["cargo", "bench", "--target", TARGET, "--locked", "--bench", bench,
         "--no-run", "--message-format=json"],
        cwd=repo, env=env, check=True, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True).stdout
    for line in out.splitlines():
        m = json.loads(line)
        if m.get("executable") and m.get("target", {}).get("name") == bench:
            copy = os.path.join(keep, f"cost-{len(os.listdir(keep))}")
            shutil.copy2(m["executable"], copy)
            return copy
    sys.exit(f"bench_cost: no {bench} bench built in {repo}")


def lend(repo, tree, bench):
    """Copies `bench` from `repo` into the worktree `tree` when that
    revision lacks it, with its [[bench]] entry."""
    src = os.path.join("benches", f"{bench}.rs")
    if os.path.exists(os.path.join(tree, src)):
        return
    shutil.copy2(os.path.join(repo, src), os.path.join(tree, src))
    with open(os.path.join(tree, "Cargo.toml"), "a") as f:
        f.write(f'\n[[bench]]\nname = "{bench}"\nharness = false\n')


def rows(exe):
    """One run of the bench: {row name: ns per packet}."""
    out = subprocess.run([exe], check=True, stdout=subprocess.PIPE,
                         text=True).stdout
    return {m[1]: float(m[2]) for m in map(ROW.match, out.splitlines()) if m}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", help="a git revision to compare with")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--head", help="a git revision instead of this tree")
    ap.add_argument("--bench", default="cost")
    a = ap.parse_args()
    repo = subprocess.run(["git", "rev-parse", "--show-toplevel"],
                          check=True, stdout=subprocess.PIPE,
                          text=True).stdout.strip()
    keep = tempfile.mkdtemp(prefix="xct-bench-cost-")
    trees = []

    def checkout(rev, role):
        """A worktree of `rev` with the bench lent to it: (short rev, exe)."""
        rev = subprocess.run(["git", "rev-parse", "--short", rev], cwd=repo,
                             check=True, stdout=subprocess.PIPE,
                             text=True).stdout.strip()
        tmp = tempfile.mkdtemp(prefix=f"xct-{role}-")
        trees.append(tmp)
        subprocess.run(["git", "worktree", "add", "-q", "--detach", tmp, rev],
                       cwd=repo, check=True)
        lend(repo, tmp, a.bench)
        # A target directory of its own: this build must not replace
        # this tree's artifacts (same package, same names).
        target = os.path.join(repo, "target", f"bench-{role}")
        return rev, build(tmp, target, keep, a.bench)

    try:
        bins = {}
        if a.base:
            rev, exe = checkout(a.base, "base")
            bins[rev] = exe
        if a.head:
            rev, exe = checkout(a.head, "head")
            bins[rev] = exe
        else:
            bins["this tree"] = build(repo, os.path.join(repo, "target"),
                                      keep, a.bench)
        runs = {name: [] for name in bins}
        for i in range(a.runs):
            # Take turns, and swap who goes first each round.
            order = list(bins) if i % 2 == 0 else list(reversed(bins))
            for name in order:
                runs[name].append(rows(bins[name]))
    finally:
        for tmp in trees:
            subprocess.run(["git", "worktree", "remove", "--force", tmp],
                           cwd=repo)
            shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(keep, ignore_errors=True)

    names = list(bins)
    labels = list(runs[names[-1]][0])
    # A row the other revision lacks (a new bench row) shows as "-".
    med = {n: {l: statistics.median(v) if (v := [r[l] for r in runs[n]
                                                 if l in r]) else None
               for l in labels} for n in names}
    cell = lambda v: "-" if v is None else f"{v:.1f}"
    head = " | ".join(f"{n} (ns, median of {a.runs})" for n in names)
    print(f"| packet | {head} |" + (" difference | ratio |" if a.base else ""))
    print("|---|" + "---:|" * (len(names) + (2 if a.base else 0)))
    for l in labels:
        cells = " | ".join(cell(med[n][l]) for n in names)
        extra = ""
        if a.base:
            old, new = med[names[0]][l], med[names[1]][l]
            extra = (" - | - |" if old is None or new is None else
                     f" {new - old:+.1f} | {new / old:.3f} |")
        print(f"| {l} | {cells} |{extra}")


if __name__ == "__main__":
    main()
