"""Wall time to generate the default silica-bks set (no cache), against the 10-minute goal.

Usage: python benchmarks/silica_bks_generation.py
Generates `load_silica_bks()` with default options into a temporary cache and writes
silica_bks_generation.json beside this script. Also times 1 000 force calls of the BKS
calculator on the 72-atom quartz cell, the unit of the MD cost.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    with tempfile.TemporaryDirectory() as cache:
        os.environ["UQBENCH_CACHE"] = cache
        from uqbench.datasets.bks import BKSCalculator
        from uqbench.datasets.silica_bks import alpha_quartz, load_silica_bks

        atoms = alpha_quartz()
        atoms.calc = BKSCalculator()
        rng = np.random.default_rng(0)
        t0 = time.perf_counter()
        for _ in range(1000):
            atoms.positions += rng.normal(scale=1e-3, size=atoms.positions.shape)
            atoms.get_forces()
        per_call = (time.perf_counter() - t0) / 1000
        t0 = time.perf_counter()
        data = load_silica_bks()
        wall = time.perf_counter() - t0
    result = {"wall_s": round(wall, 1), "goal_s": 600, "sizes": data.sizes(),
              "bks_force_call_ms_72_atoms": round(1000 * per_call, 2),
              "cpu_count": os.cpu_count()}
    print(json.dumps(result, indent=2))
    Path(__file__).with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
