"""An example uqbench plugin, written against uqbench's public API only.

- ``residual-gaussian-egnn``: a parametric method on the `TorchUQMethod` base class: the
  deterministic EGNN, then one Gaussian width per target fitted to its residuals on the
  validation split (a constant spread: an example of the API, not a method to rank);
- ``lj-argon``: a dataset of small argon cells labelled by ASE's Lennard-Jones calculator,
  with a hotter OOD split (``ood-hot``: larger displacements);
- ``interval_score_90``: the interval score of the central 90 % Gaussian interval
  (Gneiting & Raftery 2007), lower is better, in the target's unit.

Install with ``pip install -e examples/plugin``; then ``uqbench methods``, ``uqbench
datasets`` and ``uqbench metrics`` list them. Importing this module imports no torch (the
method's class is in `uqbench_example_plugin.method`, which its card names), so listing
stays fast.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase.build import bulk
from ase.calculators.lj import LennardJones
from scipy.stats import norm

from uqbench import Dataset
from uqbench.cards import card_factory
from uqbench.metrics import MetricSpec

# -- a parametric method (its class lives in .method, imported only when a run builds it) --

residual_gaussian_egnn = card_factory(Path(__file__).parent / "residual-gaussian-egnn.yaml")

# -- a dataset -------------------------------------------------------------------------------


def _cells(n: int, rattle: float, rng: np.random.Generator) -> list:
    calc = LennardJones(sigma=3.4, epsilon=0.0104, rc=6.0)
    out = []
    for _ in range(n):
        atoms = bulk("Ar", "fcc", a=5.26, cubic=True)
        atoms.positions += rng.normal(0.0, rattle, atoms.positions.shape)
        atoms.calc = calc
        atoms.info["energy"] = float(atoms.get_potential_energy())
        atoms.arrays["forces"] = atoms.get_forces().copy()
        atoms.calc = None
        out.append(atoms)
    return out


def load_lj_argon(train_size: int | None = None, seed: int = 0, quick: bool = False,
                  test_size: int = 40, rattle: float = 0.1) -> Dataset:
    """Argon fcc cells (4 atoms, periodic), Gaussian displacements of ``rattle`` Å,
    labelled by Lennard-Jones; ``ood-hot`` has three times the displacement."""
    if train_size is None:
        train_size = 20 if quick else 100
    rng = np.random.default_rng(seed)
    splits = {"train": _cells(train_size, rattle, rng), "val": _cells(20, rattle, rng),
              "test": _cells(test_size, rattle, rng),
              "ood-hot": _cells(test_size, 3 * rattle, rng)}
    return Dataset("lj-argon", splits, options={"train_size": train_size, "seed": seed,
                                                "test_size": test_size, "rattle": rattle})


load_lj_argon.summary = "Lennard-Jones argon cells (example plugin); ood-hot: 3x displacement"

# -- a metric --------------------------------------------------------------------------------


def interval_score(y, mu, sigma, level: float = 0.9) -> float:
    """Mean interval score of the central ``level`` Gaussian interval."""
    alpha = 1.0 - level
    half = norm.ppf(1 - alpha / 2) * np.asarray(sigma)
    lo, hi = np.asarray(mu) - half, np.asarray(mu) + half
    y = np.asarray(y)
    score = (hi - lo) + 2 / alpha * ((lo - y) * (y < lo) + (y - hi) * (y > hi))
    return float(np.mean(score))


INTERVAL_SCORE_90 = MetricSpec(
    "interval_score_90", "Interval score (90 %)", "target", "lower",
    lambda t: interval_score(t.y_true, t.y_pred, t.y_std, 0.9),
    summary="Width of the central 90 % Gaussian interval plus 20 x the distance by which "
            "the label misses it (Gneiting & Raftery 2007)")
