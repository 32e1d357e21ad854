"""One hand-built prediction through `score()`: every recorded metric against a value
computed here independently (scoringrules, SciPy, scikit-learn, by hand), on two splits of
structures of different sizes, for a Gaussian and a sample-based prediction. Catches a
swapped argument order, a sum for a mean, the standard for the fair CRPS, a per-atom for a
size-fair OOD score."""

from __future__ import annotations

import numpy as np
import pytest
import scoringrules as sr
from ase import Atoms
from scipy import stats
from sklearn.metrics import roc_auc_score

from uqbench.metrics import functions as F
from uqbench.metrics.table import BUILTIN
from uqbench.prediction import Prediction
from uqbench.scoring import score

Z95 = stats.norm.ppf(0.975)


def _split(sizes, rng):
    frames = []
    for n in sizes:
        a = Atoms("H" * n, positions=rng.normal(size=(n, 3)) * 3)
        a.info["energy"] = float(rng.normal() * n)
        a.arrays["forces"] = rng.normal(size=(n, 3))
        frames.append(a)
    return frames


def _gaussian(frames, rng, spread):
    n = np.array([len(a) for a in frames])
    e = np.array([a.info["energy"] for a in frames])
    f = np.concatenate([a.arrays["forces"] for a in frames])
    return Prediction(n, e + rng.normal(size=n.size) * n * 0.3,
                      rng.uniform(0.2, 1.0, n.size) * n * spread,
                      f + rng.normal(size=f.shape) * 0.5, rng.uniform(0.2, 1.0, f.shape) * spread)


@pytest.fixture(scope="module")
def case():
    rng = np.random.default_rng(11)
    splits = {"test": _split([2, 3, 2, 3, 3, 2, 2, 3], rng),
              "ood-x": _split([5, 6, 5, 6, 6, 5], rng)}
    # larger structures with slightly smaller stds per value: a score that sums per atom
    # (or counts atoms) ranks them the other way round from the size-fair one
    preds = {"test": _gaussian(splits["test"], rng, 1.0),
             "ood-x": _gaussian(splits["ood-x"], rng, 0.8)}
    metrics, _ = score(preds, splits, list(BUILTIN))
    return splits, preds, metrics


def _energy(frames, pred):
    n = np.array([len(a) for a in frames])
    y = np.array([a.info["energy"] for a in frames]) / n
    return y, pred.energy_mean / n, pred.energy_std / n


def _forces(frames, pred):
    y = np.concatenate([a.arrays["forces"] for a in frames])
    return y, pred.forces_mean, pred.forces_std


@pytest.mark.parametrize("split", ["test", "ood-x"])
def test_gaussian_metrics_by_value(case, split):
    splits, preds, metrics = case
    for target, (y, mu, sd) in (("energy", _energy(splits[split], preds[split])),
                                ("forces", _forces(splits[split], preds[split]))):
        got = metrics[split][target]
        yf, muf, sdf = y.ravel(), mu.ravel(), sd.ravel()
        assert got["crps"] == pytest.approx(sr.crps_normal(yf, muf, sdf).mean(), rel=1e-9)
        assert got["nll"] == pytest.approx(-stats.norm.logpdf(yf, muf, sdf).mean(), rel=1e-9)
        assert got["rmse"] == pytest.approx(np.sqrt(np.mean((yf - muf) ** 2)), rel=1e-12)
        assert got["mae"] == pytest.approx(np.mean(np.abs(yf - muf)), rel=1e-12)
        assert got["sharpness"] == pytest.approx(np.sqrt(np.mean(sdf**2)), rel=1e-12)
        assert got["coverage_95"] == pytest.approx(np.mean(np.abs(yf - muf) <= Z95 * sdf))
        if target == "energy":
            err, std = np.abs(y - mu), sd
        else:  # force vectors per atom: |error| and the norm of the component stds
            err = np.linalg.norm(mu - y, axis=1)
            std = np.sqrt((sd**2).sum(axis=1))
        assert got["spearman"] == pytest.approx(stats.spearmanr(err, std).statistic)
        assert got["miscalibration_area"] == pytest.approx(
            F.miscalibration_area(yf, muf, sdf))
        assert got["n_targets"] == yf.size
        assert got["n_structures"] == len(splits[split])


def test_ood_scores_by_value_and_argument_order(case):
    """ID test is the negative class, OOD the positive one; energies scored by the total
    std / sqrt(atoms), forces by the mean per-atom force-std norm, beside atom counting."""
    splits, preds, metrics = case

    def n_of(frames):
        return np.array([len(a) for a in frames])

    def energy_score(split):
        return preds[split].energy_std / np.sqrt(n_of(splits[split]))

    def force_score(split):
        norms = np.sqrt((preds[split].forces_std ** 2).sum(axis=1))
        n = n_of(splits[split])
        owners = np.repeat(np.arange(n.size), n)
        return np.bincount(owners, weights=norms) / n

    labels = np.r_[np.zeros(len(splits["test"])), np.ones(len(splits["ood-x"]))]
    for target, fn in (("energy", energy_score), ("forces", force_score)):
        expected = roc_auc_score(labels, np.r_[fn("test"), fn("ood-x")])
        assert metrics["ood-x"][target]["ood_auroc"] == pytest.approx(expected)
        size = roc_auc_score(labels, np.r_[n_of(splits["test"]), n_of(splits["ood-x"])])
        assert metrics["ood-x"][target]["ood_auroc_size_only"] == pytest.approx(size)
        assert "ood_auroc" not in metrics["test"][target]
    assert metrics["ood-x"]["forces"]["ood_auroc"] < 0.5 < metrics["ood-x"]["forces"][
        "ood_auroc_size_only"]


def test_sample_based_crps_is_the_fair_one_by_value():
    rng = np.random.default_rng(5)
    frames = _split([2, 3, 4, 2, 3], rng)
    n = np.array([len(a) for a in frames])
    e_true = np.array([a.info["energy"] for a in frames])
    f_true = np.concatenate([a.arrays["forces"] for a in frames])
    s = 6
    e = e_true + rng.normal(size=(s, n.size)) * n
    f = f_true + rng.normal(size=(s, *f_true.shape))
    pred = Prediction.from_samples(e, f, n)
    metrics, _ = score({"test": pred}, {"test": frames}, list(BUILTIN))
    fair_e = sr.crps_ensemble(e_true / n, (e / n).T, estimator="fair").mean()
    fair_f = sr.crps_ensemble(f_true.ravel(), f.reshape(s, -1).T, estimator="fair").mean()
    assert metrics["test"]["energy"]["crps"] == pytest.approx(fair_e, rel=1e-9)
    assert metrics["test"]["forces"]["crps"] == pytest.approx(fair_f, rel=1e-9)
    std = sr.crps_ensemble(e_true / n, (e / n).T, estimator="nrg").mean()
    assert abs(metrics["test"]["energy"]["crps"] - std) > 1e-3  # not the standard one
