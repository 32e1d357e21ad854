"""Every method against one baseline on one metric, split and target: the paired mean
improvement over seeds with its 95 % Student-t interval and verdict, per training size,
beside the constant predictor's value where the metric is an error (RMSE, MAE).

    python studies/versus.py leaderboard/records --dataset nbody --baseline egnn --metric rmse
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from uqbench.errors import UQBenchError
from uqbench.report.compare import relative_improvement
from uqbench.report.tables import load_records, tidy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records", type=Path)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--baseline", required=True)
    parser.add_argument("--metric", default="crps")
    parser.add_argument("--split", default="test")
    parser.add_argument("--target", default="forces")
    parser.add_argument("--config", default=None,
                        help="the variant of every method and the baseline (e.g. isotonic)")
    args = parser.parse_args()
    records = load_records(args.records)[0]
    frame = tidy(records)
    constant = {}
    if args.metric in ("rmse", "mae"):
        for r in records:
            if r["dataset"]["key"] == args.dataset and not r.get("quick"):
                ref = (r.get("reference") or {}).get("constant", {}).get("splits", {})
                value = ref.get(args.split, {}).get(args.target, {}).get(args.metric)
                if value is not None:
                    constant.setdefault(r["train_size"], {})[r["seed"]] = value
    methods = sorted(set(frame[frame["dataset"] == args.dataset]["method"]) - {args.baseline})
    lines = [f"| method | train size | n | {args.metric} ({args.split} {args.target}) "
             f"| {args.baseline} | improvement % [95 % interval] | verdict |"
             + (" constant predictor |" if constant else ""),
             "|---|---:|---:|---:|---:|---|---|" + ("---:|" if constant else "")]
    for method in methods:
        try:
            table = relative_improvement(frame, method, args.baseline, args.metric,
                                         method_config=args.config,
                                         baseline_config=args.config, dataset=args.dataset)
        except UQBenchError as exc:
            lines.append(f"| {method} | – | – | – | – | {exc} | – |" + (" – |" if constant
                                                                         else ""))
            continue
        rows = table[(table["split"] == args.split) & (table["target"] == args.target)]
        for row in rows.to_dict("records"):
            size = row["train_size"]
            ref = (f" {np.mean(list(constant[size].values())):.3g} |"
                   if constant.get(size) else (" – |" if constant else ""))
            lines.append(
                f"| {method} | {size} | {row['n_seeds']} | {row[f'{method}_mean']:.3g} "
                f"| {row[f'{args.baseline}_mean']:.3g} "
                f"| {row['improvement_pct_mean']:+.1f} [{row['improvement_pct_ci_low']:+.1f}, "
                f"{row['improvement_pct_ci_high']:+.1f}] | {row['verdict']} |" + ref)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
