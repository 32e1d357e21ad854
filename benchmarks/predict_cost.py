"""Prediction cost of every EGNN method against the deterministic EGNN, in the same run.

Usage: python benchmarks/predict_cost.py [--set-size 200] [--single 20] [--repeats 3]
Reference: the deterministic `egnn`'s `predict_distribution` on the same structures. For
each method (study-size EGNN, hidden 32 x 3 layers, as studies/nbody.yaml; fitted for a
few steps only: the cost does not depend on the weights, but LLPR's Hessian and
calibration and the heads need a fit), the best of ``--repeats`` timings of (a) one
`predict_distribution` over an nbody test set of ``--set-size`` structures and (b)
``--single`` calls on one structure each (the MD regime), as ratios to egnn's. Sample-based
methods draw their card's S. One torch thread. Writes predict_cost.json beside this script.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

import uqbench

METHODS = ("egnn", "llpr-egnn", "mve-egnn", "evidential-egnn", "shallow-ensemble-egnn",
           "ensemble-egnn", "mcdropout-egnn", "p-egnn", "blip-egnn")
STUDY = {"backbone_options": {"hidden": 32, "n_layers": 3}, "batch_size": 32,
         "max_steps": 8, "device": "cpu"}


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set-size", type=int, default=200)
    parser.add_argument("--single", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = uqbench.load_dataset("nbody", train_size=100)
    train, val = data.splits["train"], data.splits["val"][:50]
    test = data.splits["test"][:args.set_size]
    out = {"set_size": len(test), "single_calls": args.single, "repeats": args.repeats,
           "threads": 1, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
           "reference": "egnn", "methods": {}}
    for key in METHODS:
        method = uqbench.create_method(key, **STUDY).fit(train, val)
        n_samples = getattr(method, "n_samples", None)
        set_s = best_of(args.repeats, lambda m=method: m.predict_distribution(test))
        single_s = best_of(args.repeats, lambda m=method: [
            m.predict_distribution([a]) for a in test[:args.single]])
        out["methods"][key] = {"samples": n_samples if not method.parametric else None,
                               "set_s": set_s, "single_s": single_s}
        print(f"{key:24s} set {set_s:7.3f} s   single x{args.single} {single_s:7.3f} s",
              flush=True)
    ref = out["methods"]["egnn"]
    for entry in out["methods"].values():
        entry["set_ratio"] = entry["set_s"] / ref["set_s"]
        entry["single_ratio"] = entry["single_s"] / ref["single_s"]
    path = Path(__file__).with_suffix(".json")
    path.write_text(json.dumps(out, indent=2) + "\n")
    for key, entry in out["methods"].items():
        print(f"{key:24s} set x{entry['set_ratio']:6.2f}   single x{entry['single_ratio']:6.2f}")
    print(f"written: {path}")


if __name__ == "__main__":
    main()
