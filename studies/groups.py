"""Spearman(|error|, std) within each phase beside the pooled value, from records' `groups`
(mean ± sd over seeds), as a Markdown table: does a pooled ranking follow the uncertainty,
or the phase (and cell size) a structure belongs to?

    python studies/groups.py leaderboard/records --dataset silica-bks --target energy
    python studies/groups.py leaderboard/records --dataset silica-bks --metric mean_abs_error

``--metric mean_abs_error`` / ``mean_std`` give each phase's mean |error| and mean std
(records from before these were stored are rebuilt from their ``curves``, which hold
every test structure's energy |error| and std in split order, and the regenerated split's
phases: ``--from-curves``).
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np

from uqbench.report.tables import load_records


def _from_curves(record: dict, split: str, target: str, metric: str) -> dict | None:
    """Per phase mean |error| or mean std rebuilt from a record's curves, where they hold
    one value per structure (energy): the split is regenerated for its phases."""
    from uqbench import load_dataset

    curve = record["curves"][split][target]
    values = np.asarray(curve["abs_error" if metric == "mean_abs_error" else "std"])
    options = dict(record["dataset"].get("options") or {})
    options["train_size"] = record["train_size"]
    source = record["dataset"].get("source", record["dataset"]["key"])
    structures = load_dataset(source, **options).splits[split]
    if target != "energy" or len(values) != len(structures):
        return None
    phases = np.array([str(a.info.get("phase")) for a in structures])
    return {p: {metric: float(values[phases == p].mean())} for p in sorted(set(phases))}


def table(records: list[dict], dataset: str, target: str, split: str = "test",
          metric: str = "spearman", from_curves: bool = False,
          methods: list[str] | None = None, raw: bool = False) -> str:
    pooled: dict = defaultdict(list)
    within: dict = defaultdict(list)
    phases: set[str] = set()
    for r in records:
        if r["dataset"]["key"] != dataset or r.get("quick"):
            continue
        method = r["method"]["key"]
        if (methods and method not in methods) or (raw and r.get("recalibration")):
            continue
        if r.get("recalibration"):  # a recalibrated record is its own row, never pooled
            method += f" [recalibrated {r['recalibration']['method']}]"  # with the raw one
        groups = (r.get("groups") or {}).get(split, {}).get(target) or {}
        if metric in ("mean_abs_error", "mean_std"):
            if from_curves and not any(metric in v for v in groups.values()):
                groups = _from_curves(r, split, target, metric) or {}
            values_all = [v[metric] for v in groups.values() if metric in v]
            if values_all:  # the pooled column: the mean over phases (silica-bks's test
                pooled[method].append(float(np.mean(values_all)))  # phases are equal-sized)
        else:
            pooled[method].append(float(r["metrics"][split][target][metric]))
        for phase, values in groups.items():
            if metric not in values:
                continue
            phases.add(phase)
            within[method, phase].append(float(values[metric]))
    if not pooled:
        raise SystemExit(f"no records of {dataset}")
    order = sorted(phases)

    milli = metric.startswith("mean_")  # means in meV/atom or meV/Å: readable digits
    unit = f", {'meV/atom' if target == 'energy' else 'meV/Å'}" if milli else ""

    def cell(values: list[float]) -> str:
        if not values:
            return "–"
        v = np.asarray(values) * (1000.0 if milli else 1.0)
        digits = 1 if milli else 2
        sd = f" ± {v.std(ddof=1):.{digits}f}" if v.size > 1 else ""
        return f"{v.mean():.{digits}f}{sd} (n={v.size})"

    lines = [f"| method ({metric}{unit}) | pooled ({split}) | " + " | ".join(order) + " |",
             "|---|---:|" + "---:|" * len(order)]
    for method in sorted(pooled):
        cells = [cell(within.get((method, p), [])) for p in order]
        lines.append(f"| {method} | {cell(pooled[method])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records", type=Path)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--target", default="energy", choices=("energy", "forces"))
    parser.add_argument("--split", default="test")
    parser.add_argument("--metric", default="spearman",
                        help="spearman, spearman_robust, mean_abs_error or mean_std")
    parser.add_argument("--from-curves", action="store_true",
                        help="rebuild mean_abs_error / mean_std of older records from their "
                             "curves (regenerates the split)")
    parser.add_argument("--methods", help="comma-separated method keys to keep")
    parser.add_argument("--raw", action="store_true", help="leave recalibrated records out")
    args = parser.parse_args()
    records, _ = load_records(args.records)
    print(table(records, args.dataset, args.target, args.split, args.metric,
                args.from_curves, args.methods.split(",") if args.methods else None,
                args.raw))


if __name__ == "__main__":
    main()
