"""Prediction cost of every method of a backbone against its deterministic model, in one run.

Usage: python benchmarks/predict_cost.py [--backbone egnn|chgnet] [--set-size N]
       [--single N] [--repeats 3]
Reference: the deterministic `egnn`'s `predict_distribution` on the same structures. For
each method (study-size EGNN, hidden 32 x 3 layers, as studies/nbody.yaml; fitted for a
few steps only: the cost does not depend on the weights, but LLPR's Hessian and
calibration and the heads need a fit), the best of ``--repeats`` timings of (a) one
`predict_distribution` over an nbody test set of ``--set-size`` structures and (b)
``--single`` calls on one structure each (the MD regime), as ratios to egnn's. Sample-based
methods draw their card's S. One torch thread. Writes predict_cost.json beside this script.

``--backbone chgnet``: the deterministic `chgnet` (pretrained weights, finetuned for 2
steps) against the families on it, on silica-bks-small (9-18 atoms), 16 training
structures; defaults --set-size 20 --single 5; writes predict_cost_chgnet.json.
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
#: backbone -> (its methods, reference first; fit settings; dataset; train size; default
#: set size and single calls)
BACKBONES = {
    "egnn": (METHODS, STUDY, "nbody", 100, 200, 20),
    "chgnet": (("chgnet", "llpr-chgnet", "mve-chgnet", "evidential-chgnet",
                "shallow-ensemble-chgnet", "ensemble-chgnet"),
               {"batch_size": 8, "max_steps": 2, "device": "cpu"}, "silica-bks-small", 16,
               20, 5),
}


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", choices=sorted(BACKBONES), default="egnn")
    parser.add_argument("--set-size", type=int, default=None)
    parser.add_argument("--single", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    methods, settings, dataset, train_size, set_size, single = BACKBONES[args.backbone]
    args.set_size = args.set_size or set_size
    args.single = args.single or single
    torch.set_num_threads(1)
    data = uqbench.load_dataset(dataset, train_size=train_size)
    train, val = data.splits["train"], data.splits["val"][:50]
    test = data.splits["test"][:args.set_size]
    out = {"backbone": args.backbone, "dataset": dataset, "set_size": len(test),
           "single_calls": args.single, "repeats": args.repeats,
           "threads": 1, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
           "reference": methods[0], "methods": {}}
    for key in methods:
        method = uqbench.create_method(key, **settings).fit(train, val)
        n_samples = getattr(method, "n_samples", None)
        set_s = best_of(args.repeats, lambda m=method: m.predict_distribution(test))
        single_s = best_of(args.repeats, lambda m=method: [
            m.predict_distribution([a]) for a in test[:args.single]])
        out["methods"][key] = {"samples": n_samples if not method.parametric else None,
                               "set_s": set_s, "single_s": single_s}
        print(f"{key:24s} set {set_s:7.3f} s   single x{args.single} {single_s:7.3f} s",
              flush=True)
    ref = out["methods"][methods[0]]
    for entry in out["methods"].values():
        entry["set_ratio"] = entry["set_s"] / ref["set_s"]
        entry["single_ratio"] = entry["single_s"] / ref["single_s"]
    suffix = "" if args.backbone == "egnn" else f"_{args.backbone}"
    path = Path(__file__).with_name(f"predict_cost{suffix}.json")
    path.write_text(json.dumps(out, indent=2) + "\n")
    for key, entry in out["methods"].items():
        print(f"{key:24s} set x{entry['set_ratio']:6.2f}   single x{entry['single_ratio']:6.2f}")
    print(f"written: {path}")


if __name__ == "__main__":
    main()
