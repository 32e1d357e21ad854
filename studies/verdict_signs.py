"""Do a study's verdicts survive a re-run with another summation order? Each comparison
(method vs baseline, metric, per training size, split and target) is computed from two
record folders, and the table says whether the mean improvement keeps its sign and the
verdict (better / worse / not resolved) stays.

    python studies/verdict_signs.py leaderboard/records leaderboard/checks/threads2
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from uqbench.errors import UQBenchError
from uqbench.report.compare import relative_improvement
from uqbench.report.tables import load_records, tidy


def cell(row) -> str:
    return f"{row['improvement_pct_mean']:+.1f} % ({row['verdict']}, n={row['n_seeds']})"


PAIRS = ("p-egnn:blip-egnn", "ensemble-egnn:p-egnn", "p-egnn:egnn", "ensemble-egnn:egnn")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("published", type=Path)
    parser.add_argument("rerun", type=Path)
    parser.add_argument("--dataset", default="nbody")
    parser.add_argument("--metrics", default="crps,rmse")
    parser.add_argument("--pairs", default=",".join(PAIRS),
                        help="comma-separated METHOD:BASELINE")
    args = parser.parse_args()
    frames = [tidy(load_records(folder)[0]) for folder in (args.published, args.rerun)]
    if frames[1].empty or args.dataset not in set(frames[1]["dataset"]):
        print(f"No re-run records of {args.dataset} in {args.rerun} yet.")
        return
    sizes = set(frames[1]["train_size"])
    frames[0] = frames[0][frames[0]["train_size"].isin(sizes)]
    lines = ["| comparison | metric | train size | split | target | published | re-run "
             "| sign kept | verdict kept |", "|---|---|---:|---|---|---|---|---|---|"]
    kept_sign = kept_verdict = total = 0
    for pair in args.pairs.split(","):
        method, baseline = pair.split(":")
        for metric in args.metrics.split(","):
            try:
                a, b = (relative_improvement(f, method, baseline, metric,
                                             dataset=args.dataset)
                        .set_index(["train_size", "split", "target"]) for f in frames)
            except UQBenchError as exc:  # e.g. a method not (yet) re-run
                lines.append(f"| {method} vs {baseline} | {metric} | – | – | – | – "
                             f"| {exc} | – | – |")
                continue
            for key in a.index.intersection(b.index):
                x, y = a.loc[key], b.loc[key]
                sign = bool(np.sign(x["improvement_pct_mean"])
                            == np.sign(y["improvement_pct_mean"]))
                same = x["verdict"] == y["verdict"]
                total += 1
                kept_sign += sign
                kept_verdict += same
                lines.append(f"| {method} vs {baseline} | {metric} | {key[0]} | {key[1]} "
                             f"| {key[2]} | {cell(x)} | {cell(y)} | {'yes' if sign else 'NO'} "
                             f"| {'yes' if same else 'NO'} |")
    print("\n".join(lines))
    print(f"\n{kept_sign} of {total} mean improvements keep their sign; {kept_verdict} of "
          f"{total} verdicts are unchanged.")


if __name__ == "__main__":
    main()
