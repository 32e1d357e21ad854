"""One metric of one dataset as a Markdown table: methods x (split, target), mean ± sd over
seeds, from a leaderboard's tidy ``results.csv``. The README's study tables come from here.
A NaN seed makes its cell NaN (and is counted); a method with collapsed seeds is marked.

    python studies/summarise.py leaderboard/results.csv --dataset silica-bks --metric spearman
"""

from __future__ import annotations

import argparse

import pandas as pd

from uqbench.leaderboard import seed_stats


def table(frame: pd.DataFrame, dataset: str, metric: str, digits: int = 2) -> str:
    part = frame[(frame.dataset == dataset) & (frame.metric == metric) & ~frame.quick]
    if part.empty:
        raise SystemExit(f"no {metric} records for {dataset}")
    splits = ["test"] + sorted(s for s in part.split.unique() if s != "test")
    columns = [(s, t) for s in splits for t in ("energy", "forces")
               if ((part.split == s) & (part.target == t)).any()]
    # one row per configuration (label: the method, with what differs from its other
    # configurations, e.g. a recalibrated variant) and size
    part = part.assign(method=part["label"] if "label" in part else part["method"])
    keys = ["method", "train_size", "split", "target"]
    stats = seed_stats(part.groupby(keys).value)
    flags = part.drop_duplicates(["method", "train_size", "seed"])
    collapsed = (flags[flags.get("collapsed", pd.Series(False, index=flags.index))
                       .fillna(False).astype(bool)]
                 .groupby(["method", "train_size"]).seed.nunique())
    lines = ["| method | train size | " + " | ".join(f"{s} {t}" for s, t in columns) + " |",
             "|---|---:|" + "---:|" * len(columns)]
    for method, size in sorted(set(zip(part.method, part.train_size, strict=True))):
        cells = []
        for split, target in columns:
            if (method, size, split, target) not in stats.index:
                cells.append("–")
                continue
            row = stats.loc[(method, size, split, target)]
            sd = "" if pd.isna(row["std"]) else f" ± {row['std']:.{digits}f}"
            bad = int(row["count"] - row["n_finite"])
            cells.append(f"{row['mean']:.{digits}f}{sd} (n={int(row['count'])}"
                         + (f", {bad} NaN" if bad else "") + ")")
        k = int(collapsed.get((method, size), 0))
        label = f"{method} **COLLAPSED {k}**" if k else method
        lines.append(f"| {label} | {size} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results_csv")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--metric", required=True)
    parser.add_argument("--digits", type=int, default=2)
    args = parser.parse_args()
    frame = pd.read_csv(args.results_csv)
    print(table(frame, args.dataset, args.metric, args.digits))


if __name__ == "__main__":
    main()
