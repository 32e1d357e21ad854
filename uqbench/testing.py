"""`check_method`: the conformance check every UQ method should pass (like scikit-learn's
``check_estimator``), for built-ins and plugins alike.

    from uqbench.testing import check_method
    check_method("ensemble-egnn")              # a registered key
    check_method(MyMethod(max_steps=4))         # or an unfitted instance

It fits the method briefly on a few structures and checks, raising AssertionError with the
first failure: the hyperparameters round-trip (a clone has the same ``get_params``); ``fit``
returns ``self`` and every public attribute it adds ends in ``_``; the prediction has the
shapes of the structures, finite means and non-negative stds; forces are −∇E for every
sample (or for the mean of a parametric method), by a central difference along a random
direction; two fits with the same seed predict the same; ``save``/``load`` round-trips
(where implemented); and the fit spends exactly its budget of optimiser steps per model
(where it reports one in ``budget_``). Returns the names of the checks that ran.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

#: Datasets used when none is given, per backbone (EGNN and plugins: N-body; the
#: periodic foundation backbones: small silica cells).
DEFAULT_DATA = {"chgnet": "silica-bks-small", "orb": "silica-bks-small"}


def _data(method: Any, structures: list[Atoms] | None) -> tuple[list[Atoms], list[Atoms]]:
    if structures is not None:
        if len(structures) < 4:
            raise ValueError("check_method needs at least 4 labelled structures")
        return structures[:-2], structures[-2:]
    from uqbench.registry import load_dataset

    key = DEFAULT_DATA.get(getattr(method, "backbone", ""), "nbody")
    data = load_dataset(key, quick=True)
    return data.splits["train"][:6], data.splits["val"][:2]


def _configure(method: Any, steps: int) -> Any:
    params = method.get_params()
    quick = {k: v for k, v in getattr(method, "quick_params", {}).items() if k in params}
    settings = {**quick, "seed": 0}
    if "max_steps" in params:
        settings["max_steps"] = steps
        settings["max_epochs"] = None
    if "n_samples" in params:
        settings["n_samples"] = 4
    if "device" in params:
        settings["device"] = "cpu"
    if "n_members" in params:
        settings["n_members"] = 2
    method.set_params(**{k: v for k, v in settings.items() if k in params})
    return method


def _predict(method: Any, structures: list[Atoms]):
    import torch

    torch.manual_seed(12345)  # sampled methods draw from torch's generator: same draws
    return method.predict_distribution(structures)


def _close(a: np.ndarray, b: np.ndarray, what: str, rtol: float = 1e-5) -> None:
    scale = max(float(np.max(np.abs(a))), 1e-12)
    assert np.allclose(a, b, rtol=rtol, atol=rtol * scale), f"{what} differ"


def check_method(method_or_key: Any, structures: list[Atoms] | None = None,
                 steps: int = 4) -> list[str]:
    """Check that a UQ method keeps the `uqbench.UQMethod` contract (see the module)."""
    from uqbench.registry import create_method

    method = (create_method(method_or_key) if isinstance(method_or_key, str)
              else method_or_key)
    done: list[str] = []
    name = getattr(method, "key", "") or type(method).__name__
    _configure(method, steps)
    train, val = _data(method, structures)

    params = method.get_params()
    clone = type(method)(**params)
    assert clone.get_params() == params, f"{name}: a clone's get_params differs"
    done.append("clone")

    before = set(vars(method))
    fitted = method.fit(train, val)
    assert fitted is method, f"{name}: fit must return self"
    added = {a for a in set(vars(method)) - before if not a.startswith("_")}
    bad = sorted(a for a in added if not a.endswith("_"))
    assert not bad, f"{name}: fit added public attributes without a trailing _: {bad}"
    done.append("fit returns self, fitted attributes end in _")

    pred = _predict(method, val)
    n_atoms = np.array([len(a) for a in val])
    assert np.array_equal(pred.n_atoms, n_atoms), f"{name}: atom counts differ"
    assert pred.energy_mean.shape == (len(val),), f"{name}: energy shape"
    assert pred.forces_mean.shape == (int(n_atoms.sum()), 3), f"{name}: forces shape"
    for what in ("energy_mean", "energy_std", "forces_mean", "forces_std"):
        assert np.all(np.isfinite(getattr(pred, what))), f"{name}: {what} not finite"
    assert np.all(pred.energy_std >= 0) and np.all(pred.forces_std >= 0), f"{name}: std < 0"
    done.append("prediction shapes")

    _check_conservative(method, val[0], name)
    done.append("forces are -grad E per sample")

    twin = _configure(type(method)(**params), steps)
    twin.set_params(**{k: v for k, v in params.items() if k in twin.get_params()})
    twin.fit(train, val)
    again = _predict(twin, val)
    _close(pred.energy_mean, again.energy_mean, f"{name}: energies of two seeded fits",
           rtol=1e-4)
    _close(pred.forces_mean, again.forces_mean, f"{name}: forces of two seeded fits",
           rtol=1e-4)
    done.append("seeded fits agree")

    try:
        with tempfile.TemporaryDirectory() as tmp:
            method.save(Path(tmp) / "m")
            loaded = type(method).load(Path(tmp) / "m")
            back = _predict(loaded, val)
    except NotImplementedError:
        back = None
    if back is not None:
        _close(pred.energy_mean, back.energy_mean, f"{name}: energies after save/load")
        _close(pred.energy_std, back.energy_std, f"{name}: energy stds after save/load")
        done.append("save/load")

    budget = getattr(method, "budget_", None)
    if budget:
        spent = budget.get("steps_per_model") or []
        assert spent and all(s == budget["budget_steps"] for s in spent), (
            f"{name}: steps per model {spent} differ from the budget "
            f"{budget['budget_steps']}")
        done.append("budget spent exactly")
    return done


def _check_conservative(method: Any, atoms: Atoms, name: str) -> None:
    """-dE_s/dε along a unit displacement equals F_s · d for every sample s. The direction
    is the mean force's, where the check is most sensitive; the step is the largest of a
    few whose float rounding leaves the check informative (a smaller one helps where a
    step moves a pair across a neighbour-graph cutoff, which reshuffles per-edge noise such
    as dropout masks)."""
    single = str(getattr(method, "dtype", "float32")) != "float64"
    p0 = _predict(method, [atoms])
    sampled = p0.energy_samples is not None
    forces = p0.forces_samples if sampled else p0.forces_mean[None]
    d = forces.mean(axis=0)
    if not np.linalg.norm(d) > 0:
        d = np.random.default_rng(0).normal(size=d.shape)
    d = d / np.linalg.norm(d)
    work = -np.einsum("sij,ij->s", forces, d)
    scale = float(np.abs(work).max())
    tried = []
    for h in ((1e-2, 3e-3, 1e-3) if single else (1e-3, 1e-4)):
        rounding = 4 * np.finfo(np.float32 if single else np.float64).eps * float(
            np.abs(p0.energy_mean).max()) / (2 * h)
        tolerance = 0.05 * scale + rounding
        if not tolerance < 0.5 * scale:  # rounding would hide a wrong sign at this step
            tried.append(f"h={h:g}: rounding {rounding:.2g} too large for |F.d| {scale:.2g}")
            continue
        plus, minus = copy.deepcopy(atoms), copy.deepcopy(atoms)
        plus.positions = atoms.positions + h * d
        minus.positions = atoms.positions - h * d
        pp, pm = _predict(method, [plus]), _predict(method, [minus])
        e_plus = pp.energy_samples[:, 0] if sampled else pp.energy_mean[:1]
        e_minus = pm.energy_samples[:, 0] if sampled else pm.energy_mean[:1]
        slope = (e_plus - e_minus) / (2 * h)
        if np.allclose(slope, work, atol=tolerance, rtol=0.0):
            return
        tried.append(f"h={h:g}: {np.round(slope, 5)}")
    raise AssertionError(f"{name}: forces are not -grad E (finite differences "
                         f"{'; '.join(tried)} vs -F.d {np.round(work, 5)})")
