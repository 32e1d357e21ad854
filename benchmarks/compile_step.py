"""Does `torch.compile` pay for the study EGNN's training step on CPU? One optimiser step
(hidden 32 x 3 layers, batch 32, nbody, float32, one thread; the MSE loss on energies and
forces = -dE/dx, so the step differentiates twice) in eager mode against the same model
wrapped by `torch.compile` (default inductor backend), the compile time apart. A failure
to compile is recorded with its error: that is a result too.

Usage: python benchmarks/compile_step.py [--steps 40]
Writes compile_step.json beside this script.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from uqbench.backbones.adapter import make_adapter
from uqbench.backbones.graph import collate
from uqbench.datasets.nbody import load_nbody
from uqbench.training import mse_loss

OPTIONS = {"hidden": 32, "n_layers": 3}


def loop(model, batches, steps: int) -> float:
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    t0 = time.perf_counter()
    for step in range(steps):
        optimiser.zero_grad()
        mse_loss(model, batches[step % len(batches)], 1.0).backward()
        optimiser.step()
    return 1000 * (time.perf_counter() - t0) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_nbody(train_size=320)
    adapter = make_adapter("egnn", OPTIONS)
    items = adapter.graph_items(data.splits["train"])
    batches = [collate(items[i:i + 32], torch.float32) for i in range(0, len(items), 32)]
    torch.manual_seed(0)
    model = adapter.build()
    adapter.fit_normalisation(model, items)
    loop(model, batches, 5)  # warm-up
    eager = min(loop(model, batches, args.steps) for _ in range(2))
    out = {"torch": torch.__version__, "steps": args.steps, "threads": 1,
           "eager_ms_per_step": eager}
    try:
        compiled = torch.compile(model)
        t0 = time.perf_counter()
        loop(compiled, batches, 3)  # compiles (and recompiles per batch shape)
        out["compile_s"] = time.perf_counter() - t0
        out["compiled_ms_per_step"] = min(loop(compiled, batches, args.steps)
                                          for _ in range(2))
        out["speedup"] = eager / out["compiled_ms_per_step"]
    except Exception as exc:  # the finding is that it does not compile
        out["compile_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
    print(json.dumps(out, indent=1))
    Path(__file__).with_name("compile_step.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
