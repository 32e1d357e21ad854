"""A scored Target says which structure each value belongs to (per-structure metrics)."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms

from uqbench.prediction import Prediction
from uqbench.scoring import targets


def test_each_value_knows_its_structure():
    rng = np.random.default_rng(0)
    frames = []
    for n in (2, 3, 1):
        a = Atoms("H" * n, positions=rng.normal(size=(n, 3)))
        a.info["energy"] = float(n)
        a.arrays["forces"] = rng.normal(size=(n, 3))
        frames.append(a)
    del frames[1].info["energy"]  # the middle structure has forces only
    n_atoms = np.array([2, 3, 1])
    p = Prediction(n_atoms=n_atoms, energy_mean=np.zeros(3), energy_std=np.ones(3),
                   forces_mean=np.zeros((6, 3)), forces_std=np.ones((6, 3)))
    t = targets(p, frames)
    assert list(t["energy"].structure) == [0, 2]
    assert list(t["forces"].structure) == [0] * 6 + [1] * 9 + [2] * 3
    # a per-structure force RMSE, as a plugin metric would compute it
    err = (t["forces"].y_pred - t["forces"].y_true) ** 2
    per = np.sqrt(np.bincount(t["forces"].structure, weights=err) / np.bincount(
        t["forces"].structure))
    for i, a in enumerate(frames):
        assert per[i] == pytest.approx(np.sqrt(np.mean(a.arrays["forces"] ** 2)))
