"""How far out a method's errors lie in its own stds (raw records), from the records'
per-structure energy curves: where most |error| / std exceed ~8.3, the Gaussian CDF is 0 or
1 in double precision and a recalibration map of CDF levels (isotonic) has nothing to
resolve.

    python studies/saturation.py leaderboard/records --dataset nbody --method blip-egnn
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from uqbench.report.tables import load_records

SATURATED = 8.3  # 1 - Phi(8.3) < 2**-53: the CDF rounds to 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records", type=Path)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--method", required=True)
    parser.add_argument("--split", default="test")
    args = parser.parse_args()
    print("| train size | seed | median |error|/std | share beyond 8.3 std |")
    print("|---:|---:|---:|---:|")
    rows = []
    for r in load_records(args.records)[0]:
        if (r["dataset"]["key"] != args.dataset or r["method"]["key"] != args.method
                or r.get("recalibration") or r.get("quick")):
            continue
        curve = r["curves"][args.split]["energy"]
        z = np.asarray(curve["abs_error"]) / np.asarray(curve["std"])
        rows.append((r["train_size"], r["seed"], float(np.median(z)),
                     float((z > SATURATED).mean())))
    for size, seed, median, share in sorted(rows):
        print(f"| {size} | {seed} | {median:.1f} | {share:.2f} |")


if __name__ == "__main__":
    main()
