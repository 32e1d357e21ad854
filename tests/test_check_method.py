"""`uqbench.testing.check_method` passes for every registered method and fails for broken
ones (a check that cannot fail checks nothing)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from uqbench import registry
from uqbench.errors import UQBenchError
from uqbench.testing import check_method

FOUNDATION = ("chgnet", "orb")


def _keys(foundation: bool) -> list[str]:
    keys = []
    for key in sorted(registry.entries("method")):
        entry = registry.entries("method")[key]
        if entry.error is not None:
            continue
        backbone = getattr(registry.create_method(key), "backbone", "")
        if (backbone in FOUNDATION) == foundation:
            keys.append(key)
    return keys


@pytest.mark.parametrize("key", _keys(foundation=False))
def test_every_method_on_a_from_scratch_backbone_passes(key):
    assert len(check_method(key)) >= 6


@pytest.mark.slow
@pytest.mark.parametrize("key", _keys(foundation=True))
def test_every_foundation_method_passes(key):
    method = registry.create_method(key)
    try:
        method.check_prerequisites()
    except UQBenchError as exc:  # Orb without network or weights: nothing to check here
        pytest.skip(str(exc))
    assert len(check_method(method)) >= 6


def _broken(kind: str):
    base = type(registry.create_method("egnn"))

    class Broken(base):
        def fit(self, train_set, val=None):
            out = super().fit(train_set, val)
            if kind == "attribute":
                self.residual = 1.0  # a fitted attribute without its trailing _
            # an unseeded draw per fit: two fits with one seed disagree
            self.shift_ = float(np.random.default_rng().normal())
            return None if kind == "fit" else out

        def predict_distribution(self, structures, n_samples=None):
            pred = super().predict_distribution(structures, n_samples)
            if kind == "forces":
                pred = replace(pred, forces_mean=-pred.forces_mean,
                               forces_samples=-pred.forces_samples)
            if kind == "seed":
                shift = self.shift_
                pred = replace(pred, energy_mean=pred.energy_mean + shift,
                               energy_samples=pred.energy_samples + shift)
            return pred

    method = Broken()
    method.set_params(**registry.create_method("egnn").quick_params)
    return method


@pytest.mark.parametrize("kind, message", [
    ("fit", "fit must return self"),
    ("attribute", "trailing _"),
    ("forces", "not -grad E"),
    ("seed", "seeded fits"),
])
def test_a_broken_method_fails(kind, message):
    with pytest.raises(AssertionError, match=message):
        check_method(_broken(kind))
