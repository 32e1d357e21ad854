"""The collapse gate: did a method's predictive mean learn anything?

Every record stores the scores of a reference that learned nothing, the constant predictor
(the training set's mean energy per atom for every structure, zero forces), on every
scored split. A run is ``collapsed`` when, on the ID test split, its mean is not clearly
better than that reference:

- force RMSE >= ``FORCE_RATIO`` (0.9) x the constant predictor's (the RMS of the force
  labels), or
- energy-per-atom RMSE >= ``ENERGY_RATIO`` (1.0) x the constant predictor's, or
- its predictions are not finite.

Forces carry the margin because they are what a potential is for and they have no
offset to hide behind; the energy test only catches a mean no better than the training
mean (per-atom energies of a single phase vary little, so a fitted model may still be
only modestly better than it). Collapsed runs are flagged by `uqbench run`, marked in the
leaderboard and left out of `uqbench compare` unless asked for.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms

from uqbench.dataset import energies, forces, n_atoms

FORCE_RATIO = 0.9
ENERGY_RATIO = 1.0
RULE = (f"collapsed when, on the ID test split, force RMSE >= {FORCE_RATIO} x or energy RMSE "
        f">= {ENERGY_RATIO} x that of the constant predictor (train mean energy per atom, "
        "zero forces), or predictions are not finite")


def constant_reference(train: list[Atoms], splits: dict[str, list[Atoms]]) -> dict:
    """RMSE and MAE of the constant predictor per split and target (eV/atom, eV/Å), over
    the labels present."""
    train_e = energies(train) / n_atoms(train)
    train_e = train_e[np.isfinite(train_e)]
    mean_e = float(np.mean(train_e)) if train_e.size else 0.0
    out = {}
    for name, structures in splits.items():
        e = energies(structures) / n_atoms(structures) - mean_e
        f = forces(structures).ravel()
        out[name] = {}
        for target, err in (("energy", e[np.isfinite(e)]), ("forces", f[np.isfinite(f)])):
            if err.size:  # a split without labels of a target has no reference for it
                out[name][target] = {"rmse": float(np.sqrt(np.mean(err**2))),
                                     "mae": float(np.mean(np.abs(err)))}
    return {"train_mean_energy_per_atom": mean_e, "splits": out}


def verdict(metrics: dict, reference: dict, id_split: str = "test") -> dict:
    """``{"collapsed": bool, "rmse_ratio": {target: ratio}, "rule": ...}`` for one run."""
    ratios, collapsed = {}, False
    limits = {"energy": ENERGY_RATIO, "forces": FORCE_RATIO}
    ref = reference["splits"].get(id_split, {})
    for target, limit in limits.items():
        rmse = _number(metrics.get(id_split, {}).get(target, {}).get("rmse"))
        base = ref.get(target, {}).get("rmse")
        if rmse is None or base is None or base == 0:
            continue
        ratio = rmse / base
        ratios[target] = ratio
        if not np.isfinite(ratio) or ratio >= limit:
            collapsed = True
    return {"collapsed": collapsed, "rmse_ratio": ratios, "rule": RULE}


def _number(value) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")
