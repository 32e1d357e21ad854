"""Training speed of the models uqbench ships at 1 torch thread against all cores.

Usage: python benchmarks/threads.py [--steps 60]
For each case (the study's EGNN on nbody and on silica-bks-small, the default-size EGNN on
nbody, CHGNet on silica-bks-small where the extra is installed) it times `--steps`
optimiser steps of the deterministic model, each in a fresh process at 1 thread and at
`os.cpu_count()` threads, best of 2. Reference: the 1-thread time of the same case in the
same run; the ratio > 1 means more threads are faster. Run it on an otherwise idle machine:
a busy core makes every ratio meaningless. Writes threads.json beside this script.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

CASES = {
    "egnn-study-nbody": ("egnn", "nbody", {"backbone_options": {"hidden": 32, "n_layers": 2},
                                           "batch_size": 32}),
    "egnn-default-nbody": ("egnn", "nbody", {}),
    "egnn-study-silica-bks-small": ("egnn", "silica-bks-small",
                                    {"backbone_options": {"hidden": 32, "n_layers": 2,
                                                          "cutoff": 4.0}, "batch_size": 32}),
    "chgnet-silica-bks-small": ("chgnet", "silica-bks-small", {"batch_size": 8}),
}

CHILD = """
import json, sys, time, torch, uqbench
threads, method, dataset, params, steps = json.loads(sys.argv[1])
torch.set_num_threads(threads)
data = uqbench.load_dataset(dataset, train_size=100)
m = uqbench.create_method(method, device="cpu", max_steps=steps, patience=10**6, **params)
t0 = time.perf_counter()
m.fit(data.splits["train"])
print(json.dumps({"seconds": time.perf_counter() - t0}))
"""


def timed(threads: int, method: str, dataset: str, params: dict, steps: int) -> float:
    best = float("inf")
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", CHILD,
                              json.dumps([threads, method, dataset, params, steps])],
                             capture_output=True, text=True, check=True,
                             env={**os.environ, "UQBENCH_PROGRESS_INTERVAL": "1e9"})
        best = min(best, json.loads(out.stdout.strip().splitlines()[-1])["seconds"])
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    results = {}
    for name, (method, dataset, params) in CASES.items():
        try:
            one = timed(1, method, dataset, params, args.steps)
            many = timed(cores, method, dataset, params, args.steps)
        except subprocess.CalledProcessError as exc:  # e.g. the chgnet extra is missing
            results[name] = {"skipped": exc.stderr.strip().splitlines()[-1]}
            continue
        results[name] = {"seconds_1_thread": one, f"seconds_{cores}_threads": many,
                         "speedup_all_cores": one / many}
        print(f"{name}: 1 thread {one:.1f} s, {cores} threads {many:.1f} s, "
              f"ratio {one / many:.2f}")
    out = {"steps": args.steps, "cores": cores, "machine": platform.machine(),
           "cases": results}
    Path(__file__).with_suffix(".json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
