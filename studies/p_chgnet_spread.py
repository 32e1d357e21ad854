"""How P-CHGNet's samples spread at the foundation study's CPU cut (seed 0, the configuration
of studies/foundation.yaml): quantiles of the per-atom energy std on the test split, of the
errors of the sample mean, the sample median and the noise-free model, and of single samples;
then, for the sample furthest from the noise-free model, how far each conditioned layer alone
moves that energy (the others' gamma and beta zeroed) against all of them together.

    python studies/p_chgnet_spread.py    # 5-25 min on 2 cores; writes p_chgnet_spread.json
    python studies/p_chgnet_spread.py --finetune-epochs 6   # writes p_chgnet_spread-6.json
"""

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch

import uqbench
from uqbench.backbones.adapter import energy_and_forces
from uqbench.backbones.graph import collate
from uqbench.runner import RunConfig, prepare
from uqbench.strategies.perturbation import ConditionalLayerNorm

Q = [0.1, 0.5, 0.9, 1.0]


def quantiles(x: np.ndarray, q=Q) -> list[float]:
    return [round(float(v), 4) for v in np.quantile(x, q)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--finetune-epochs", type=int, default=2,
                        help="CRPS epochs (the study's CPU cut: 2)")
    epochs = parser.parse_args().finetune_epochs
    # 2 epochs of MSE and `epochs` of CRPS, as one budget split by finetune_fraction
    cfg = RunConfig(method="p-chgnet", dataset="silica-bks-small", train_size=100, seed=0,
                    params={"max_epochs": 2 + epochs,
                            "finetune_fraction": round(epochs / (2 + epochs), 4)},
                    n_samples=8)
    method, data_kwargs = prepare(cfg)
    data = uqbench.load_dataset("silica-bks-small", **data_kwargs)
    start = time.perf_counter()
    method.fit(data.splits["train"], data.splits["val"])
    test = data.splits["test"]
    n = np.array([len(a) for a in test])
    e_true = np.array([a.info["energy"] for a in test]) / n
    samples = method.predict_distribution(test, n_samples=8).energy_samples / n  # [S, n]
    batch = collate(method.adapter.graph_items(test)).to(method.device_)
    noise_free, _ = energy_and_forces(method.models_[0], batch)  # z = None: no perturbation
    noise_free = noise_free.detach().cpu().numpy() / n
    out = {
        "finetune_epochs": epochs,
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
    out["worst_sample"] = attribute_worst(method, test, samples, noise_free)
    print(json.dumps(out, indent=1))
    name = "p_chgnet_spread.json" if epochs == 2 else f"p_chgnet_spread-{epochs}.json"
    (Path(__file__).parent / name).write_text(json.dumps(out, indent=1) + "\n")


def attribute_worst(method, test, samples: np.ndarray, noise_free: np.ndarray) -> dict:
    """For the structure with the furthest sample, 32 fresh (seeded) noise draws; the draw
    furthest from the noise-free energy is attributed layer by layer (eV/atom)."""
    model = method.models_[0]
    k = int(np.abs(samples - noise_free).max(0).argmax())
    one = collate(method.adapter.graph_items([test[k]])).to(method.device_)
    n_atoms = len(test[k])
    torch.manual_seed(0)
    z = torch.randn(32, method.noise_dim, device=method.device_)
    named = [(name, m) for name, m in model.named_modules()
             if isinstance(m, ConditionalLayerNorm)]
    saved = [copy.deepcopy((m.gamma.state_dict(), m.beta.state_dict())) for _, m in named]
    with torch.no_grad():
        base = float(model(one)) / n_atoms
        energies = model(one.repeat(32), z=z).cpu().numpy() / n_atoms
        worst = int(np.abs(energies - base).argmax())
        zw = z[worst][None]
        singles = {}
        for j, (name, _) in enumerate(named):
            for i, (_, other) in enumerate(named):
                for lin, state in zip((other.gamma, other.beta), saved[i], strict=True):
                    lin.load_state_dict(state)
                    if i != j:
                        lin.weight.zero_()
                        lin.bias.zero_()
            singles[name.removeprefix("backbone.model.")] = round(
                float(model(one, z=zw)) / n_atoms - base, 4)
        for (_, layer), (g, b) in zip(named, saved, strict=True):
            layer.gamma.load_state_dict(g)
            layer.beta.load_state_dict(b)
        total = float(model(one, z=zw)) / n_atoms - base
        shifts = [float(t.abs().max()) for _, m in named for t in (m.gamma(zw), m.beta(zw))]
    return {"structure": k, "n_atoms": n_atoms, "noise_free_energy_per_atom": round(base, 4),
            "all_layers_shift": round(total, 4), "largest_single_layer_shift": max(
                singles.values(), key=abs), "max_abs_gamma_or_beta": round(max(shifts), 3),
            "single_layer_shifts": singles}


if __name__ == "__main__":
    main()
