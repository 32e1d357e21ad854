"""Fair CRPS on 1e6 targets x 32 samples: uqbench vs scoringrules, in the same run.

Usage: python benchmarks/crps_vs_scoringrules.py [--targets 1000000] [--samples 32]
Writes the result as JSON beside this script (crps_vs_scoringrules.json) and prints it.
Reference: scoringrules.crps_ensemble(estimator="fair") with its numba backend when numba is
installed (else NumPy), which runs on one thread; uqbench is timed with its default threads
(one per core) and on one thread. Each timing is the best of --repeat runs after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import scoringrules as sr

from uqbench.metrics import crps_ensemble, functions


def best_of(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", type=int, default=1_000_000)
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    y = rng.normal(size=args.targets)
    x = rng.normal(size=(args.samples, args.targets))
    try:
        import numba  # noqa: F401

        backend = "numba"
    except ImportError:
        backend = "numpy"
    ours = crps_ensemble(y, x, fair=True, reduce=False)
    ref = sr.crps_ensemble(y, x, m_axis=0, estimator="fair", backend=backend)
    max_diff = float(np.max(np.abs(ours - ref)))
    t_ours = best_of(lambda: crps_ensemble(y, x, fair=True, reduce=False), args.repeat)
    t_ref = best_of(lambda: sr.crps_ensemble(y, x, m_axis=0, estimator="fair",
                                             backend=backend), args.repeat)
    functions.MAX_THREADS = 1
    t_ours_1 = best_of(lambda: crps_ensemble(y, x, fair=True, reduce=False), args.repeat)
    functions.MAX_THREADS = None
    result = {
        "targets": args.targets, "samples": args.samples, "reference_backend": backend,
        "uqbench_s": round(t_ours, 4), "scoringrules_s": round(t_ref, 4),
        "ratio_uqbench_over_scoringrules": round(t_ours / t_ref, 3),
        "uqbench_one_thread_s": round(t_ours_1, 4),
        "ratio_one_thread": round(t_ours_1 / t_ref, 3),
        "max_abs_difference": max_diff, "cpu_count": os.cpu_count(),
        "machine": platform.machine(), "numpy": np.__version__, "scoringrules": sr.__version__,
    }
    print(json.dumps(result, indent=2))
    Path(__file__).with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
