"""Spearman(|error|, std) within each phase beside the pooled value, from records' `groups`
(mean ± sd over seeds), as a Markdown table: does a pooled ranking follow the uncertainty,
or the phase (and cell size) a structure belongs to?

    python studies/groups.py leaderboard/records --dataset silica-bks --target energy
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np

from uqbench.leaderboard import load_records


def table(records: list[dict], dataset: str, target: str, split: str = "test",
          metric: str = "spearman") -> str:
    pooled: dict = defaultdict(list)
    within: dict = defaultdict(list)
    phases: set[str] = set()
    for r in records:
        if r["dataset"]["key"] != dataset or r.get("quick"):
            continue
        method = r["method"]["key"]
        pooled[method].append(float(r["metrics"][split][target][metric]))
        for phase, values in ((r.get("groups") or {}).get(split, {}).get(target) or {}).items():
            phases.add(phase)
            within[method, phase].append(float(values[metric]))
    if not pooled:
        raise SystemExit(f"no records of {dataset}")
    order = sorted(phases)

    def cell(values: list[float]) -> str:
        if not values:
            return "–"
        v = np.asarray(values)
        sd = f" ± {v.std(ddof=1):.2f}" if v.size > 1 else ""
        return f"{v.mean():.2f}{sd} (n={v.size})"

    lines = [f"| method | pooled ({split}) | " + " | ".join(order) + " |",
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
    parser.add_argument("--metric", default="spearman")
    args = parser.parse_args()
    records, _ = load_records(args.records)
    print(table(records, args.dataset, args.target, args.split, args.metric))


if __name__ == "__main__":
    main()
