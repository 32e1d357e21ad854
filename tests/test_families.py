"""More UQ families: mean-variance estimation, and post-hoc recalibration of any method."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase import Atoms
from scipy.stats import norm

import uqbench
from uqbench.cli import main
from uqbench.metrics.functions import miscalibration_area
from uqbench.prediction import Prediction
from uqbench.recalibration import apply, scalar_factors
from uqbench.strategies.mve import gaussian_nll

SMALL = {"backbone_options": {"hidden": 8, "n_layers": 1}, "max_steps": 12,
         "batch_size": 16, "device": "cpu"}


def test_gaussian_nll_is_the_closed_form():
    rng = np.random.default_rng(0)
    err, sd = rng.normal(size=50), rng.uniform(0.1, 3.0, size=50)
    ours = gaussian_nll(torch.tensor(err), torch.tensor(sd**2)).numpy()
    reference = -norm.logpdf(err, scale=sd) - 0.5 * np.log(2 * np.pi)
    np.testing.assert_allclose(ours, reference, rtol=1e-12)


def test_mve_loss_equals_its_definition_and_predicts_a_gaussian(tiny_nbody):
    from uqbench.backbones.adapter import energy_and_forces

    method = uqbench.create_method("mve-egnn", **SMALL, dtype="float64")
    method.fit(tiny_nbody.splits["train"][:24], tiny_nbody.splits["val"][:8])
    model = method.models_[0]
    batch = next(method.batches(tiny_nbody.splits["test"][:6]))
    e, f = energy_and_forces(model, batch)[:2]
    var_e, w = model.variances(batch)
    scale, n = model.energy_scale, batch.n_atoms.double()
    e_err = (e - batch.energy) / n / scale
    f_err = (f - batch.forces) / scale
    v_e = var_e / n**2
    expected = ((0.5 * torch.log(v_e) + 0.5 * e_err**2 / v_e).mean()
                + method.force_weight * (0.5 * torch.log(w[:, None]) + 0.5 * f_err**2
                                         / w[:, None]).mean())
    model.eval()
    torch.testing.assert_close(method.nll_loss(model, batch).detach(), expected.detach())
    pred = method.predict_distribution(tiny_nbody.splits["test"])
    assert pred.energy_samples is None and (pred.energy_std > 0).all()
    assert (pred.forces_std > 0).all()
    assert "n_samples" not in method.get_params()
    assert [s for h in method.history_ for s in h["stages"]] == ["warm_start", "nll"]
    assert method.budget_["steps_per_model"] == [12]


def _structures(n: int, rng) -> list[Atoms]:
    out = []
    for _ in range(n):
        a = Atoms("H3", positions=rng.normal(size=(3, 3)))
        a.info["energy"] = float(rng.normal())
        a.arrays["forces"] = rng.normal(size=(3, 3))
        out.append(a)
    return out


def _overconfident(structures, rng, noise=1.0, claimed=0.1) -> Prediction:
    """A prediction whose errors are ``noise`` while it claims ``claimed``."""
    n = np.array([len(a) for a in structures])
    e = np.array([a.info["energy"] for a in structures])
    f = np.concatenate([a.arrays["forces"] for a in structures])
    return Prediction(n_atoms=n, energy_mean=e + rng.normal(0, noise, e.shape) * n,
                      energy_std=np.full(e.shape, claimed) * n,
                      forces_mean=f + rng.normal(0, noise, f.shape),
                      forces_std=np.full(f.shape, claimed))


def test_scalar_recalibration_fixes_an_overconfident_method_and_keeps_the_mean():
    rng = np.random.default_rng(1)
    val, test = _structures(300, rng), _structures(300, rng)
    factors = scalar_factors(_overconfident(val, rng), val)
    assert factors["energy"] == pytest.approx(10.0, rel=0.15)
    assert factors["forces"] == pytest.approx(10.0, rel=0.1)
    raw = _overconfident(test, rng)
    fixed = apply(raw, factors)
    np.testing.assert_array_equal(fixed.energy_mean, raw.energy_mean)
    np.testing.assert_array_equal(fixed.forces_mean, raw.forces_mean)
    f = np.concatenate([a.arrays["forces"] for a in test])
    before = miscalibration_area(f, raw.forces_mean, raw.forces_std)
    after = miscalibration_area(f, fixed.forces_mean, fixed.forces_std)
    assert before > 0.3 and after < 0.05


def test_samples_are_stretched_about_their_mean():
    rng = np.random.default_rng(2)
    samples_e = rng.normal(size=(16, 4))
    samples_f = rng.normal(size=(16, 8, 3))
    pred = Prediction.from_samples(samples_e, samples_f, np.array([2, 2, 2, 2]))
    out = apply(pred, {"energy": 3.0, "forces": 0.5})
    np.testing.assert_allclose(out.energy_samples.std(0), 3.0 * samples_e.std(0))
    np.testing.assert_allclose(out.energy_samples.mean(0), samples_e.mean(0))
    np.testing.assert_allclose(out.energy_std, 3.0 * pred.energy_std)
    np.testing.assert_allclose(out.forces_std, 0.5 * pred.forces_std)


def test_recalibrated_run_writes_raw_and_recalibrated_records(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["run", "-m", "mcdropout-egnn", "-d", "nbody", "--quick", "-p", "max_steps=6",
                 "-p", "n_samples=4", "--recalibrate", "scalar", "--out", str(out)]) == 0
    assert "recalibrated (scalar, on val)" in capsys.readouterr().out
    records = [json.loads(p.read_text()) for p in out.rglob("*.json")]
    assert len(records) == 2
    (cal,) = [r for r in records if r.get("recalibration")]
    (raw,) = [r for r in records if not r.get("recalibration")]
    assert cal["recalibration"]["raw_record"] == raw["run_id"]
    assert cal["config"]["recalibrate"] == "scalar" and "recalibrate" not in raw["config"]
    s = cal["recalibration"]["factors"]["forces"]
    for split in cal["metrics"]:
        assert cal["metrics"][split]["forces"]["rmse"] == raw["metrics"][split]["forces"][
            "rmse"]  # the mean is untouched
        assert cal["metrics"][split]["forces"]["sharpness"] == pytest.approx(
            s * raw["metrics"][split]["forces"]["sharpness"], rel=1e-9)
    from uqbench.leaderboard import load_records, tidy, wide

    table = wide(tidy(load_records(out)[0]))
    assert len(set(table["label"])) == 2  # a raw and a recalibrated row


def test_shallow_ensemble_heads_are_potentials_and_its_loss_is_the_nll(tiny_nbody):
    method = uqbench.create_method("shallow-ensemble-egnn", n_heads=4, **SMALL,
                                   dtype="float64")
    method.fit(tiny_nbody.splits["train"][:24], tiny_nbody.splits["val"][:8])
    model = method.models_[0].eval()
    batch = next(method.batches(tiny_nbody.splits["test"][:2]))
    e, f = model.energies_and_forces(batch)
    assert e.shape == (4, 2) and f.shape == (4, batch.positions.shape[0], 3)
    assert e.std(0).min() > 0  # the heads differ
    # head 2's forces are minus the gradient of head 2's energy (finite differences)
    eps, atom, axis = 1e-5, 1, 0
    shifted = batch.positions.clone()
    shifted[atom, axis] += eps
    up = model.head_energies(batch, shifted)[2].sum()
    shifted[atom, axis] -= 2 * eps
    down = model.head_energies(batch, shifted)[2].sum()
    assert float((down - up).detach()) / (2 * eps) == pytest.approx(float(f[2, atom, axis]),
                                                             rel=1e-5, abs=1e-8)
    scale, n = model.energy_scale, batch.n_atoms.double()
    ep, fp = e / n / scale, f / scale
    ev, fv = ep.var(0, unbiased=False) + 1e-6, fp.var(0, unbiased=False) + 1e-6
    expected = (gaussian_nll(ep.mean(0) - batch.energy / n / scale, ev).mean()
                + gaussian_nll(fp.mean(0) - batch.forces / scale, fv).mean())
    torch.testing.assert_close(method.nll_loss(model, batch).detach(), expected.detach())
    pred = method.predict_distribution(tiny_nbody.splits["test"])
    assert pred.energy_samples.shape[0] == 4


def test_recalibration_without_val_is_one_line_before_fitting(tmp_path, capsys):
    import ase.io

    rng = np.random.default_rng(3)
    frames = _structures(12, rng)
    for k, a in enumerate(frames):
        a.info["part"] = "train" if k < 8 else "test"
    ase.io.write(tmp_path / "d.xyz", frames, format="extxyz")
    out = tmp_path / "out"
    code = main(["run", "-m", "egnn", "-d", str(tmp_path / "d.xyz"), "--split-key", "part",
                 "--recalibrate", "scalar", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "needs a validation split" in err[0], err
    assert not out.exists()
