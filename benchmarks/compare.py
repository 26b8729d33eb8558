"""Time this checkout and another one with the same benchmark, taking turns.

```sh
git worktree add --detach /tmp/before <commit>
.venv/bin/python benchmarks/compare.py /tmp/before            # 2 runs of each, --quick
.venv/bin/python benchmarks/compare.py /tmp/before --runs 3 --full
```

Each run is ``run.py`` in a process of its own (``TRIGGERS_BENCH_TREE`` points
the other run's imports at the other checkout's ``triggers``; the benchmark's
code is this checkout's for both). The runs alternate, this tree first, so a
change in the machine's load hits both trees alike. Every figure printed is
the median of that case's figures over the runs of one tree; client CPU is
``time.process_time``, which load affects far less than wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


#: A change smaller than this (either way) is reported as "same".
NOISE = 0.05


def run_once(tree: str | None, quick: bool) -> dict[str, Any]:
    """One ``run.py`` process timing ``tree`` (this checkout if None)."""
    env = dict(os.environ)
    env.pop("TRIGGERS_BENCH_RUN_ID", None)  # every run cleans up its own keys
    env.pop("TRIGGERS_BENCH_TREE", None)
    if tree:
        env["TRIGGERS_BENCH_TREE"] = tree
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [sys.executable, os.path.join(ROOT, "benchmarks", "run.py"), "--json", out.name]
        if quick:
            command.append("--quick")
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        try:
            with open(out.name) as result:
                return dict(json.load(result))
        except (OSError, ValueError) as error:
            raise SystemExit(
                f"run.py on {tree or ROOT} wrote no result ({error}); its output:\n"
                + done.stdout
                + done.stderr
            ) from error


def merge(runs: list[dict[str, Any]]) -> tuple[list[Any], list[str]]:
    """One row per case: the median of each figure over ``runs``."""
    from benchmarks.common import Row

    rows = []
    for n, first in enumerate(runs[0]["rows"]):
        same = [run["rows"][n] for run in runs]
        merged = dict(first)
        for field in ("median_us", "ratio", "interleaved"):
            values = [r[field] for r in same if r[field] is not None]
            merged[field] = statistics.median(values) if values else None
        rows.append(Row(**merged))
    return rows, [p for run in runs for p in run["problems"]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("other", help="the other checkout (its triggers package is timed)")
    parser.add_argument("--runs", type=int, default=2, help="runs of each tree (default 2)")
    parser.add_argument("--full", action="store_true", help="full repetitions, not --quick")
    args = parser.parse_args(argv)
    other = os.path.abspath(args.other)
    if not os.path.isdir(os.path.join(other, "triggers")):
        parser.error(f"{other} has no triggers package")

    results: dict[str, list[dict[str, Any]]] = {"this": [], "other": []}
    for n in range(args.runs):
        for side, tree in (("this", None), ("other", other)):
            print(f"run {n + 1}/{args.runs}: {ROOT if tree is None else tree}", flush=True)
            results[side].append(run_once(tree, quick=not args.full))

    from benchmarks.common import print_table

    merged = {side: merge(runs) for side, runs in results.items()}
    for side, title in (("this", ROOT), ("other", other)):
        rows, problems = merged[side]
        print(f"\n{title} (median of {args.runs} runs):\n")
        print_table(rows)
        if problems:
            print("exactly-once scheduling VIOLATED:\n  " + "\n  ".join(problems))

    print(
        f"\nside by side ({other} -> {ROOT}): figures, the change (of the median "
        f"us for times, of the figure otherwise; beyond {NOISE:.0%} either way it "
        "is called slower/faster), this tree's target verdict, the medians:\n"
    )
    width = max(len(r.case) for r in merged["this"][0])
    for now, then in zip(merged["this"][0], merged["other"][0], strict=True):
        if now.median_us and then.median_us:
            # Times: the medians themselves (each tree's PING unit comes from
            # its own runs, and moves with the load as much as a fire does).
            change = now.median_us / then.median_us - 1
        else:
            change = now.ratio / then.ratio - 1 if then.ratio else 0.0
        verdict = "slower" if change > NOISE else "faster" if change < -NOISE else "same"
        target = "" if now.target is None else "PASS" if now.passed else "FAIL"
        times = ""
        if now.median_us is not None and then.median_us is not None:
            times = f"{then.median_us:,.0f} -> {now.median_us:,.0f} us"
        print(
            f"{now.case.ljust(width)}  {then._fmt(then.ratio):>12} -> "
            f"{now._fmt(now.ratio):>12}  {change:+6.0%}  {verdict:>6}  {target:4}  {times}"
        )
    failed = [r.case for r in merged["this"][0] if not r.passed] + merged["this"][1]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
