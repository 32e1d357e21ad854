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
    assert "recalibrated (scalar, on the calibration split)" in capsys.readouterr().out
    records = [json.loads(p.read_text()) for p in out.rglob("*.json")]
    assert len(records) == 2
    (cal,) = [r for r in records if r.get("recalibration")]
    (raw,) = [r for r in records if not r.get("recalibration")]
    assert cal["recalibration"]["raw_record"] == raw["run_id"]
    assert cal["config"]["recalibrate"] == "scalar" and "recalibrate" not in raw["config"]
    assert cal["recalibration"]["fitted_on"] == "calibration"
    sizes = raw["dataset"]["sizes"]
    assert sizes["calibration"] >= 1 and sizes["val"] >= 1
    s = cal["recalibration"]["factors"]["forces"]
    for split in cal["metrics"]:
        assert cal["metrics"][split]["forces"]["rmse"] == raw["metrics"][split]["forces"][
            "rmse"]  # the mean is untouched
        assert cal["metrics"][split]["forces"]["sharpness"] == pytest.approx(
            s * raw["metrics"][split]["forces"]["sharpness"], rel=1e-9)
    from uqbench.report.tables import load_records, tidy, wide

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


def test_egnn_readout_hooks_reproduce_its_energy(tiny_nbody):
    """The adapter's pooled readout, mapped by energy_from_readout, is EGNN's own energy."""
    from uqbench.backbones.adapter import make_adapter
    from uqbench.backbones.graph import collate

    adapter = make_adapter("egnn", {"hidden": 16, "n_layers": 2})
    model = adapter.build().double()
    items = adapter.graph_items(tiny_nbody.splits["train"][:6])
    adapter.fit_normalisation(model, items)
    batch = collate(items, torch.float64)
    h = adapter.node_features(model, batch)
    pooled = adapter.pool_readout(model, batch, h, adapter.readout(model)).squeeze(-1)
    torch.testing.assert_close(adapter.energy_from_readout(model, batch, pooled), model(batch))


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
    assert code == 2 and len(err) == 1 and "needs a calibration split" in err[0], err
    assert not out.exists()


def test_nig_nll_is_the_student_t_it_implies():
    from scipy.stats import t as student_t

    from uqbench.strategies.evidential import nig_moments, nig_nll

    rng = np.random.default_rng(1)
    err = rng.normal(size=60)
    nu, alpha, beta = (rng.uniform(0.05, 5, 60), rng.uniform(1.05, 6, 60),
                       rng.uniform(0.05, 3, 60))
    ours = nig_nll(*(torch.tensor(x) for x in (err, nu, alpha, beta))).numpy()
    scale = np.sqrt(beta * (1 + nu) / (nu * alpha))
    np.testing.assert_allclose(ours, -student_t.logpdf(err, 2 * alpha, scale=scale), rtol=1e-10)
    std, epistemic, df = (x.numpy() for x in nig_moments(
        *(torch.tensor(x) for x in (nu, alpha, beta))))
    np.testing.assert_allclose(std, student_t.std(2 * alpha, scale=scale), rtol=1e-10)
    np.testing.assert_allclose(epistemic**2, beta / (nu * (alpha - 1)), rtol=1e-10)
    np.testing.assert_allclose(df, 2 * alpha)


def test_evidential_loss_equals_its_definition_and_predicts_a_student_t(tiny_nbody):
    from uqbench.backbones.adapter import energy_and_forces
    from uqbench.metrics.functions import crps_student_t
    from uqbench.scoring import targets
    from uqbench.strategies.evidential import nig_nll

    method = uqbench.create_method("evidential-egnn", **SMALL, dtype="float64",
                                   evidential_weight=0.1)
    method.fit(tiny_nbody.splits["train"][:24], tiny_nbody.splits["val"][:8])
    model = method.models_[0]
    batch = next(method.batches(tiny_nbody.splits["test"][:6]))
    e, f = energy_and_forces(model, batch)[:2]
    (nu_e, a_e, b_e), (nu_f, a_f, b_f) = model.evidence(batch)
    scale, n = model.energy_scale, batch.n_atoms.double()
    e_err = (e - batch.energy) / n / scale
    f_err = (f - batch.forces) / scale
    def per(x):
        return x[:, None].expand_as(f)

    expected = ((nig_nll(e_err, nu_e, a_e, b_e) + 0.1 * e_err.abs() * (2 * nu_e + a_e)).mean()
                + method.force_weight * (nig_nll(f_err, per(nu_f), per(a_f), per(b_f))
                                         + 0.1 * f_err.abs() * (2 * per(nu_f) + per(a_f))
                                         ).mean())
    model.eval()
    torch.testing.assert_close(method.evidential_loss(model, batch).detach(),
                               expected.detach())
    test = tiny_nbody.splits["test"]
    pred = method.predict_distribution(test)
    assert pred.energy_samples is None and (pred.energy_df > 2).all()
    assert (pred.forces_df > 2).all() and pred.forces_df.shape == pred.forces_std.shape
    assert (pred.energy_epistemic_std <= pred.energy_std).all()
    assert (pred.energy_epistemic_std > 0).all()
    # the scorer scores it as the Student-t
    t = targets(pred, test)["energy"]
    np.testing.assert_allclose(t.df, pred.energy_df)
    crps = crps_student_t(t.y_true, t.y_pred, t.y_std, t.df)
    from uqbench.metrics.table import CRPS

    assert CRPS.compute(t) == pytest.approx(crps)
    assert [s for h in method.history_ for s in h["stages"]] == ["warm_start", "evidential"]
    assert method.budget_["steps_per_model"] == [12]


def test_evidential_run_records_student_t_scores_and_variance_parts(tmp_path):
    out = tmp_path / "res"
    code = main(["run", "--method", "evidential-egnn", "--dataset", "nbody", "--quick",
                 "--out", str(out), "-p", "max_epochs=2"])
    assert code == 0
    (path,) = out.rglob("*.json")
    record = json.loads(path.read_text())
    parts = record["variance_parts"]
    for split in ("test", "ood-n", "ood-close"):
        for target in ("energy", "forces"):
            part = parts[split][target]
            assert 0 < part["epistemic_fraction"] <= 1
            assert np.isfinite(part["spearman_epistemic"])
    assert "ood_auroc_epistemic" in parts["ood-n"]["energy"]
    assert "ood_auroc_epistemic" not in parts["test"]["energy"]
    assert np.isfinite(record["metrics"]["test"]["energy"]["nll"])


def test_recalibrating_a_student_t_keeps_its_df_and_minimises_its_nll():
    from uqbench.metrics.functions import nll_student_t

    rng = np.random.default_rng(3)
    structures = _structures(300, rng)
    base = _overconfident(structures, rng)
    df_e, df_f = np.full(len(structures), 4.0), np.full(base.forces_std.shape, 4.0)
    pred = Prediction(n_atoms=base.n_atoms, energy_mean=base.energy_mean,
                      energy_std=base.energy_std, forces_mean=base.forces_mean,
                      forces_std=base.forces_std, energy_df=df_e, forces_df=df_f,
                      energy_epistemic_std=0.5 * base.energy_std,
                      forces_epistemic_std=0.5 * base.forces_std)
    factors = scalar_factors(pred, structures)
    fixed = apply(pred, factors)
    np.testing.assert_array_equal(fixed.energy_df, df_e)
    np.testing.assert_allclose(fixed.energy_epistemic_std, 0.5 * fixed.energy_std)
    from uqbench.scoring import targets

    t = targets(pred, structures)["energy"]
    nll = [nll_student_t(t.y_true, t.y_pred, s * t.y_std, t.df)
           for s in factors["energy"] * np.array([0.9, 1.0, 1.1])]
    assert nll[1] < nll[0] and nll[1] < nll[2]


def _dimers(distances, rng=None) -> list[Atoms]:
    """Two-atom structures labelled by a Morse potential (D = 1 eV, a = 2/Å, r0 = 1 Å)."""
    out = []
    for r in distances:
        a = Atoms("H2", positions=[[0, 0, 0], [r, 0, 0]])
        x = np.exp(-2.0 * (r - 1.0))
        a.info["energy"] = float((1 - x) ** 2 - 1)
        f = -2.0 * (1 - x) * 2.0 * x  # -dE/dr on the second atom
        a.arrays["forces"] = np.array([[-f, 0, 0], [f, 0, 0]], dtype=float)
        out.append(a)
    return out


LLPR_SMALL = {"backbone_options": {"hidden": 16, "n_layers": 2}, "max_steps": 150,
              "batch_size": 16, "device": "cpu", "dtype": "float64", "lr": 3e-3}


def test_llpr_variance_grows_away_from_the_training_data():
    rng = np.random.default_rng(0)
    train = _dimers(rng.uniform(0.9, 1.3, 64))
    val = _dimers(rng.uniform(0.9, 1.3, 16))
    method = uqbench.create_method("llpr-egnn", **LLPR_SMALL).fit(train, val)
    inside = method.predict_distribution(_dimers(np.linspace(0.95, 1.25, 7)))
    outside = method.predict_distribution(_dimers([1.6, 2.2, 3.0]))
    # energy std per structure: beyond the training interval it is larger than anywhere
    # inside it, and grows with the distance from it
    assert outside.energy_std.min() > inside.energy_std.max()
    assert np.all(np.diff(outside.energy_std) > 0)
    info = method.fitted_info()["calibration"]
    assert info["fitted_on"] == "val" and info["alpha2"] > 0


def test_llpr_is_the_deterministic_model_with_the_rigidity_variances(tiny_nbody):
    train, val = tiny_nbody.splits["train"][:24], tiny_nbody.splits["val"][:8]
    test = tiny_nbody.splits["test"][:6]
    llpr = uqbench.create_method("llpr-egnn", **SMALL, dtype="float64").fit(train, val)
    det = uqbench.create_method("egnn", **SMALL, dtype="float64").fit(train, val)
    pred, ref = llpr.predict_distribution(test), det.predict_distribution(test)
    np.testing.assert_array_equal(pred.energy_mean, ref.energy_mean)
    np.testing.assert_array_equal(pred.forces_mean, ref.forces_mean)
    assert llpr.budget_["steps_per_model"] == det.budget_["steps_per_model"]
    # the force std of a component is alpha sqrt(g^T M g), g the gradient of the summed
    # last-layer features with respect to that coordinate: checked against a Jacobian
    model = llpr.models_[0]
    batch = next(llpr.batches(test[:1]))

    def summed(pos):
        return model.features(batch, pos)[0]

    jac = torch.autograd.functional.jacobian(summed, batch.positions.detach())  # [L, n, 3]
    g = jac.permute(1, 2, 0)
    var = ((g @ model.inverse) * g).sum(-1) * model.alpha2
    expected = (model.energy_scale * var.sqrt()).detach().numpy()
    n_atoms = len(test[0])
    np.testing.assert_allclose(pred.forces_std[:n_atoms], expected, rtol=1e-8)
    # the calibration: alpha^2 minimises the validation NLL at the chosen regulariser
    from uqbench.scoring import targets

    val_pred = llpr.predict_distribution(val)
    found = targets(val_pred, val)

    def nll(factor):
        return sum(w * float(np.mean(0.5 * np.log(factor * t.y_std**2)
                                     + 0.5 * (t.y_true - t.y_pred) ** 2 / (factor * t.y_std**2)))
                   for w, t in ((1.0, found["energy"]), (llpr.force_weight, found["forces"])))

    assert nll(1.0) < nll(0.8) and nll(1.0) < nll(1.25)


def test_llpr_quick_run_records_its_calibration(tmp_path):
    out = tmp_path / "res"
    assert main(["run", "--method", "llpr-egnn", "--dataset", "nbody", "--quick",
                 "--out", str(out), "-p", "max_epochs=2"]) == 0
    (path,) = out.rglob("*.json")
    record = json.loads(path.read_text())
    calibration = record["fitted"]["calibration"]
    # on the calibration split, not on the val that picked the weights
    assert calibration["fitted_on"] == "calibration" and calibration["alpha2"] > 0
    assert record["dataset"]["sizes"]["calibration"] >= 1
    assert record["variance_parts"] is None and record["n_samples"] is None
    assert record["metrics"]["test"]["forces"]["sharpness"] > 0


def test_isotonic_recalibration_fixes_a_miscalibrated_shape_and_keeps_the_mean():
    """Errors from a Student-t (3 df) under a Gaussian prediction of the wrong width: one
    std factor cannot fix the shape, the level map can (held-out structures)."""
    from scipy.stats import t as student_t

    from uqbench.recalibration import apply_isotonic, isotonic_maps

    rng = np.random.default_rng(5)

    def heavy(structures):
        n = np.array([len(a) for a in structures])
        e = np.array([a.info["energy"] for a in structures])
        f = np.concatenate([a.arrays["forces"] for a in structures])
        return Prediction(n_atoms=n, energy_mean=e + student_t.rvs(3, size=e.shape,
                                                                    random_state=rng) * n,
                          energy_std=np.full(e.shape, 0.3) * n,
                          forces_mean=f + student_t.rvs(3, size=f.shape, random_state=rng),
                          forces_std=np.full(f.shape, 0.3))

    val, test = _structures(400, rng), _structures(400, rng)
    raw_val, raw_test = heavy(val), heavy(test)
    iso = apply_isotonic(raw_test, isotonic_maps(raw_val, val))
    scalar = apply(raw_test, scalar_factors(raw_val, val))
    from uqbench.scoring import targets

    for name in ("energy", "forces"):
        t_raw, t_iso = targets(raw_test, test)[name], targets(iso, test)[name]
        t_sc = targets(scalar, test)[name]
        area = {k: miscalibration_area(t.y_true, t.y_pred, t.y_std, df=t.df,
                                       level_map=t.level_map, base_std=t.base_std)
                for k, t in (("raw", t_raw), ("iso", t_iso), ("scalar", t_sc))}
        assert area["iso"] < 0.5 * area["raw"]
        assert area["iso"] < area["scalar"]
        np.testing.assert_array_equal(t_iso.y_pred, t_raw.y_pred)
    assert iso.energy_samples is None and iso.energy_level_map is not None


def test_isotonic_run_writes_raw_and_recalibrated_records(tmp_path):
    out = tmp_path / "res"
    assert main(["run", "--method", "mve-egnn", "--dataset", "nbody", "--quick",
                 "--out", str(out), "-p", "max_epochs=2", "--recalibrate", "isotonic"]) == 0
    records = [json.loads(p.read_text()) for p in out.rglob("*.json")]
    assert len(records) == 2
    (recal,) = [r for r in records if r.get("recalibration")]
    (raw,) = [r for r in records if not r.get("recalibration")]
    maps = recal["recalibration"]["level_maps"]
    assert set(maps) == {"energy", "forces"} and maps["forces"][0] == [0.0, 0.0]
    assert recal["recalibration"]["raw_record"] == raw["run_id"]
    for target in ("energy", "forces"):
        assert recal["metrics"]["test"][target]["rmse"] == raw["metrics"]["test"][target]["rmse"]
        assert np.isfinite(recal["metrics"]["test"][target]["crps"])


def test_a_level_map_needs_its_base_std_and_no_samples():
    n = np.array([2])
    base = dict(n_atoms=n, energy_mean=np.zeros(1), energy_std=np.ones(1),
                forces_mean=np.zeros((2, 3)), forces_std=np.ones((2, 3)))
    identity = np.array([[0.0, 0.0], [1.0, 1.0]])
    with pytest.raises(ValueError, match="come together"):
        Prediction(**base, energy_level_map=identity)
    with pytest.raises(ValueError, match="no samples"):
        Prediction(**base, energy_level_map=identity, energy_base_std=np.ones(1),
                   energy_samples=np.zeros((2, 1)), forces_samples=np.zeros((2, 2, 3)))
