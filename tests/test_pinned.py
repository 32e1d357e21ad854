"""Pinned identities and decision rules on their boundaries: a change to hashing, to a
default, or to a threshold's comparison fails here, loudly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from uqbench import collapse
from uqbench.cache import content_hash
from uqbench.results import run_id
from uqbench.runner import RunConfig, identity, prepare

ROOT = Path(__file__).resolve().parent.parent


def test_content_hash_and_run_id_are_pinned():
    assert content_hash({"a": 1, "b": [1, 2]}) == "e6f20bdc3757e5e7"
    config = {"method": "egnn", "params": {"lr": 0.001}, "dataset": "nbody",
              "dataset_options": {}, "train_size": 100, "seed": 3, "quick": False,
              "n_samples": None, "threads": 1}
    assert run_id(config) == "n100-seed3-bcbb974bf1"


@pytest.mark.parametrize("cfg, expected", [
    (dict(method="egnn", train_size=100, seed=0), "n100-seed0-b2fb1ac454"),
    (dict(method="p-egnn", train_size=1000, seed=4,
          params={"backbone_options": {"hidden": 32, "n_layers": 3}}), "n1000-seed4-d275edf435"),
    (dict(method="ensemble-egnn", train_size=100, seed=2, recalibrate="conformal"),
     "n100-seed2-f8113368d8"),
])
def test_run_ids_of_the_current_defaults_are_pinned(tmp_path, cfg, expected):
    """A changed card default, option or hashing rule changes these ids: on purpose only
    (resume of every study depends on them)."""
    config = RunConfig(dataset="nbody", out=tmp_path, **cfg)
    method, kwargs = prepare(config)
    assert identity(config, method, kwargs)[0] == expected


def test_every_published_record_keeps_its_id():
    paths = sorted((ROOT / "leaderboard").rglob("*.json"))
    records = [json.loads(p.read_text()) for p in paths]
    records = [r for r in records if isinstance(r, dict) and "config" in r and "run_id" in r]
    assert len(records) >= 243
    for record in records:
        assert run_id(record["config"]) == record["run_id"]
        raw = (record.get("recalibration") or {}).get("raw_record")
        if raw:  # a recalibrated record names the raw run of the same fit
            config = {k: v for k, v in record["config"].items() if k != "recalibrate"}
            assert run_id(config).split("-")[-1] == raw.split("-")[-1]


REF = {"splits": {"test": {"energy": {"rmse": 1.0}, "forces": {"rmse": 1.0}}}}


@pytest.mark.parametrize("energy, forces, expected", [
    (collapse.ENERGY_RATIO, 0.5, True),  # at the energy threshold: collapsed
    (np.nextafter(collapse.ENERGY_RATIO, 0), 0.5, False),
    (0.5, collapse.FORCE_RATIO, True),  # at the force threshold: collapsed
    (0.5, np.nextafter(collapse.FORCE_RATIO, 0), False),
    (0.5, float("inf"), True),
])
def test_collapse_thresholds_are_inclusive(energy, forces, expected):
    metrics = {"test": {"energy": {"rmse": energy}, "forces": {"rmse": forces}}}
    assert collapse.verdict(metrics, REF)["collapsed"] is expected
    assert (collapse.FORCE_RATIO, collapse.ENERGY_RATIO) == (0.9, 1.0)


def test_scalar_recalibration_is_the_rms_of_z_on_biased_residuals():
    """s^2 = mean(z^2) (the Gaussian NLL minimiser): with biased residuals it differs from
    the standard deviation of z, which a wrong implementation would give."""
    from ase import Atoms

    from uqbench.prediction import Prediction
    from uqbench.recalibration import scalar_factors

    rng = np.random.default_rng(0)
    n = 400
    z = 2.0 + rng.normal(size=n)  # biased: mean 2
    frames = []
    for _ in range(n):
        a = Atoms("H", positions=[[0, 0, 0]])
        a.info["energy"] = 0.0
        a.arrays["forces"] = np.zeros((1, 3))
        frames.append(a)
    sigma = rng.uniform(0.5, 2.0, n)
    pred = Prediction(np.ones(n, int), -z * sigma, sigma, np.zeros((n, 3)), np.ones((n, 3)))
    factor = scalar_factors(pred, frames)["energy"]
    assert factor == pytest.approx(np.sqrt(np.mean(z**2)), rel=1e-12)
    assert abs(factor - z.std()) > 1.0
