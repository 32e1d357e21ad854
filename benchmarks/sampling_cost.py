"""Cost of S = 32 samples from P-EGNN against 32 deterministic passes of its backbone.

Usage: python benchmarks/sampling_cost.py [--single 30] [--set-size 1000]
Reference ("32 deterministic passes"): 32 calls of a deterministic predictor that builds
the graph, runs energy + autograd forces and returns NumPy arrays, as 32 force calls of a
deterministic model in MD would. Measured: one `predict_distribution(..., n_samples=32)`.
Two regimes: one structure at a time (MD; goal <= 0.25) and a 1000-structure test set
(goal <= 1.1). Default-size EGNN (hidden 64, 4 layers), untrained (cost does not depend on
the weights), float32, CPU. Writes sampling_cost.json beside this script.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

import uqbench
from uqbench.backbones.adapter import energy_and_forces
from uqbench.backbones.graph import collate
from uqbench.strategies.base import MAX_EDGES_PER_PASS, _chunks

S = 32


def deterministic_predict(method, model, structures):
    items = method.adapter.graph_items(structures)
    out_e, out_f = [], []
    for chunk in _chunks(items, MAX_EDGES_PER_PASS):
        e, f = energy_and_forces(model, collate(chunk, torch.float32))
        out_e.append(e.detach().numpy())
        out_f.append(f.detach().numpy())
    return np.concatenate(out_e), np.concatenate(out_f)


def timed(fn, repeat=3):
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--single", type=int, default=30, help="structures timed one at a time")
    ap.add_argument("--set-size", type=int, default=1000)
    args = ap.parse_args()
    data = uqbench.load_dataset("nbody", train_size=50, test_size=args.set_size)
    method = uqbench.create_method("p-egnn", device="cpu", n_samples=S)
    method.device_ = torch.device("cpu")
    torch.manual_seed(0)
    backbone = method.adapter.build()
    method.adapter.fit_normalisation(backbone, method.adapter.graph_items(data.splits["train"]))
    model = method.wrap(backbone).eval()
    method.models_ = [model]
    test = data.splits["test"]

    singles = test[: args.single]

    def sampled_single():
        for a in singles:
            method.predict_distribution([a], S)

    def reference_single():
        for a in singles:
            for _ in range(S):
                deterministic_predict(method, model, [a])

    t_single = timed(sampled_single)
    t_single_ref = timed(reference_single, repeat=1)
    t_set = timed(lambda: method.predict_distribution(test, S), repeat=2)
    t_set_ref = timed(lambda: [deterministic_predict(method, model, test) for _ in range(S)],
                      repeat=2)
    result = {
        "samples": S, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "single_structure": {"structures": len(singles), "sampled_s": round(t_single, 4),
                             "reference_s": round(t_single_ref, 4),
                             "ratio": round(t_single / t_single_ref, 3), "goal": 0.25},
        "test_set": {"structures": len(test), "sampled_s": round(t_set, 4),
                     "reference_s": round(t_set_ref, 4),
                     "ratio": round(t_set / t_set_ref, 3), "goal": 1.1},
    }
    print(json.dumps(result, indent=2))
    Path(__file__).with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
