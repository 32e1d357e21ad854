"""One metric of one dataset as a Markdown table: methods x (split, target), mean ± sd over
seeds, from a leaderboard's tidy ``results.csv``. The README's study tables come from here.
A NaN seed makes its cell NaN (and is counted); a method with collapsed seeds is marked.

    python studies/summarise.py leaderboard/results.csv --dataset silica-bks --metric spearman
"""

from __future__ import annotations

import argparse

import pandas as pd

from uqbench.report.compare import t_half_width
from uqbench.report.tables import seed_stats


def table(frame: pd.DataFrame, dataset: str, metric: str, digits: int = 2,
          methods: list[str] | None = None, variants: list[str] | None = None,
          train_sizes: list[int] | None = None, interval: bool = False) -> str:
    """The Markdown table; ``methods``/``variants``/``train_sizes`` keep only those rows
    (a variant is ``raw``, ``recalibrated scalar``, ...; a method with one configuration
    has none and is kept by ``raw``); ``interval`` prints the mean's 95 % Student-t
    interval over seeds instead of the sd."""
    part = frame[(frame.dataset == dataset) & (frame.metric == metric) & ~frame.quick]
    if methods:
        part = part[part.method.isin(methods)]
    if variants:
        variant = part["variant"].fillna("raw") if "variant" in part else "raw"
        part = part[pd.Series(variant, index=part.index).isin(variants)]
    if train_sizes:
        part = part[part.train_size.isin(train_sizes)]
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
            if interval:
                half = t_half_width(row["std"], int(row["count"]))
                sd = "" if pd.isna(half) else f" ± {half:.{digits}f}"
            else:
                sd = "" if pd.isna(row["std"]) else f" ± {row['std']:.{digits}f}"
            bad = int(row["count"] - row["n_finite"])
            cells.append(f"{row['mean']:.{digits}f}{sd} (n={int(row['count'])}"
                         + (f", {bad} NaN" if bad else "") + ")")
        k = int(collapsed.get((method, size), 0))
        label = f"{method} **COLLAPSED {k}**" if k else method
        lines.append(f"| {label} | {size} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cost_table(frame: pd.DataFrame, dataset: str, methods: list[str] | None = None,
               variants: list[str] | None = None,
               train_sizes: list[int] | None = None) -> str:
    """Mean fit wall time (s) and prediction time (ms per structure) over seeds."""
    part = frame[(frame.dataset == dataset) & ~frame.quick]
    if methods:
        part = part[part.method.isin(methods)]
    if variants:
        part = part[part["variant"].fillna("raw").isin(variants)]
    if train_sizes:
        part = part[part.train_size.isin(train_sizes)]
    runs = part.drop_duplicates("run_id")
    if runs.empty:
        raise SystemExit(f"no records for {dataset}")
    lines = ["| method | train size | fit (s) | predict (ms/structure) | seeds |",
             "|---|---:|---:|---:|---:|"]
    for (method, size), group in runs.groupby(["method", "train_size"], sort=True):
        lines.append(f"| {method} | {size} | {group.fit_s.mean():.0f} "
                     f"| {1000 * group.predict_s_per_structure.mean():.1f} "
                     f"| {group.seed.nunique()} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results_csv")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--metric", required=True,
                        help="a metric key, or `cost` for fit and prediction times")
    parser.add_argument("--digits", type=int, default=2)
    parser.add_argument("--methods", help="comma-separated method keys to keep")
    parser.add_argument("--variants", help="comma-separated variants to keep "
                        "(raw, recalibrated scalar, ...)")
    parser.add_argument("--train-sizes", help="comma-separated training sizes to keep")
    parser.add_argument("--interval", action="store_true",
                        help="± the 95 %% Student-t interval of the seed mean, not the sd")
    args = parser.parse_args()
    frame = pd.read_csv(args.results_csv)

    def split(text: str | None) -> list[str] | None:
        return text.split(",") if text else None

    if args.metric == "cost":
        print(cost_table(frame, args.dataset, split(args.methods), split(args.variants),
                         [int(x) for x in split(args.train_sizes)] if args.train_sizes
                         else None))
        return
    print(table(frame, args.dataset, args.metric, args.digits, split(args.methods),
                split(args.variants),
                [int(x) for x in split(args.train_sizes)] if args.train_sizes else None,
                args.interval))


if __name__ == "__main__":
    main()
