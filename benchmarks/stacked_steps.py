"""Optimiser-step time of the study EGNN (hidden 32 x 3 layers, batch 32, nbody, float32):
uqbench's training loop for one model, a plain PyTorch loop of the same model (batches
collated once, outside the timing: the overhead reference), and K models trained stacked
(`uqbench.training.train_stacked`) against K one-model fits. Ratios within one run.

Usage: python benchmarks/stacked_steps.py [--steps 60] [--k 5] [--threads 1 2]
Writes stacked_steps.json beside this script.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from uqbench.backbones.adapter import make_adapter
from uqbench.backbones.graph import collate
from uqbench.backbones.stacked import StackedEGNN
from uqbench.datasets.nbody import load_nbody
from uqbench.training import mse_loss, train, train_stacked

OPTIONS = {"hidden": 32, "n_layers": 3}
CPU = torch.device("cpu")


def models(items, k):
    adapter = make_adapter("egnn", OPTIONS)
    out = []
    for i in range(k):
        torch.manual_seed(i)
        model = adapter.build()
        adapter.fit_normalisation(model, items)
        out.append(model)
    return out


def per_step(fn, steps: int, repeats: int = 2) -> float:
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return 1000 * best / steps


def plain_loop(model, batches, steps: int) -> None:
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for step in range(steps):
        batch = batches[step % len(batches)]
        optimiser.zero_grad()
        mse_loss(model, batch, 1.0).backward()
        optimiser.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    data = load_nbody(train_size=1000, val_size=10, test_size=10, ood_size=10)
    items = make_adapter("egnn", OPTIONS).graph_items(data.splits["train"])
    pre = [collate(items[i:i + 32]) for i in range(0, len(items), 32)]
    out = {"model": OPTIONS, "batch_size": 32, "dataset": "nbody (5 particles)",
           "steps": args.steps, "k": args.k, "cpu_count": os.cpu_count(),
           "torch": torch.__version__, "ms_per_step": {}}
    for threads in args.threads:
        torch.set_num_threads(threads)
        (one,) = models(items, 1)
        loop_ms = per_step(partial(
            train, one, items, None, partial(mse_loss, force_weight=1.0),
            max_epochs=args.steps, lr=1e-3, batch_size=32, patience=None, device=CPU,
            dtype=torch.float32, seed=0, max_steps=args.steps), args.steps)
        plain_ms = per_step(partial(plain_loop, one, pre, args.steps), args.steps)
        stack = StackedEGNN.from_models(models(items, args.k))
        stacked_ms = per_step(partial(
            train_stacked, stack, [items] * args.k, None, force_weight=1.0, lr=1e-3,
            batch_size=32, device=CPU, dtype=torch.float32, seeds=list(range(args.k)),
            max_steps=args.steps), args.steps)
        row = {"uqbench_loop_one_model": round(loop_ms, 2),
               "plain_pytorch_loop_one_model": round(plain_ms, 2),
               f"stacked_{args.k}_models": round(stacked_ms, 2),
               "loop_over_plain": round(loop_ms / plain_ms, 2),
               f"stacked_{args.k}_over_one_model": round(stacked_ms / loop_ms, 2),
               f"speedup_over_{args.k}_separate_fits": round(args.k * loop_ms / stacked_ms, 2)}
        out["ms_per_step"][f"{threads} thread(s)"] = row
        print(threads, row, flush=True)
    Path(__file__).with_suffix(".json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
