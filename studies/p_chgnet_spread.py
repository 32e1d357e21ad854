"""How P-CHGNet's samples spread at the foundation study's CPU cut (seed 0, the configuration
of studies/foundation.yaml): quantiles of the per-atom energy std on the test split, of the
errors of the sample mean, the sample median and the noise-free model, and of single samples.

    python studies/p_chgnet_spread.py    # 5-25 min on 2 cores; writes p_chgnet_spread.json
"""

import json
import time
from pathlib import Path

import numpy as np

import uqbench
from uqbench.backbones.adapter import energy_and_forces
from uqbench.backbones.graph import collate
from uqbench.runner import RunConfig, prepare

Q = [0.1, 0.5, 0.9, 1.0]


def quantiles(x: np.ndarray, q=Q) -> list[float]:
    return [round(float(v), 4) for v in np.quantile(x, q)]


def main() -> None:
    cfg = RunConfig(method="p-chgnet", dataset="silica-bks-small", train_size=100, seed=0,
                    params={"max_epochs": 2, "patience": 2, "finetune_epochs": 2},
                    n_samples=8)
    method, data_kwargs = prepare(cfg)
    data = uqbench.load_dataset("silica-bks-small", **data_kwargs)
    start = time.perf_counter()
    method.fit(data.splits["train"], data.splits["val"])
    test = data.splits["test"]
    n = np.array([len(a) for a in test])
    e_true = np.array([a.info["energy"] for a in test]) / n
    samples = method.predict_distribution(test, n_samples=8).energy_samples / n  # [S, n]
    batch = collate(method._adapter.graph_items(test)).to(method.device_)
    noise_free, _ = energy_and_forces(method.models_[0], batch)  # z = None: no perturbation
    noise_free = noise_free.detach().cpu().numpy() / n
    out = {
        "quantiles": Q,
        "energy_std_per_atom": quantiles(samples.std(0)),
        "abs_error_of_sample_mean": quantiles(np.abs(samples.mean(0) - e_true)),
        "abs_error_of_sample_median": quantiles(np.abs(np.median(samples, 0) - e_true)),
        "abs_error_noise_free": quantiles(np.abs(noise_free - e_true)),
        "abs_error_single_samples_q10_50_90_99_100": quantiles(
            np.abs(samples - e_true), [0.1, 0.5, 0.9, 0.99, 1.0]),
        "unit": "eV/atom",
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(out, indent=1))
    (Path(__file__).parent / "p_chgnet_spread.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
