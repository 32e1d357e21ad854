"""The calibration split (post-hoc fits of their own) and split-conformal recalibration."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms

from uqbench.dataset import carve_calibration
from uqbench.metrics import functions as F
from uqbench.prediction import Prediction
from uqbench.recalibration import apply, conformal_factors, fit


def _frames(n: int, trajectories: int | None = None) -> list[Atoms]:
    out = []
    for i in range(n):
        a = Atoms("H", positions=[[0.0, 0.0, float(i)]])
        if trajectories:
            a.info["trajectory"] = i % trajectories
        a.info["energy"] = 0.0
        a.arrays["forces"] = np.zeros((1, 3))
        out.append(a)
    return out


def test_calibration_is_half_of_val_disjoint_by_trajectory_and_seeded():
    val = _frames(60, trajectories=6)
    rest, cal = carve_calibration(val, seed=3)
    assert len(rest) + len(cal) == 60 and len(cal) == 30
    ids = {id(a) for a in rest}
    assert not any(id(a) in ids for a in cal)
    traj_rest = {a.info["trajectory"] for a in rest}
    traj_cal = {a.info["trajectory"] for a in cal}
    assert not traj_rest & traj_cal and len(traj_cal) == 3  # whole trajectories move
    again = carve_calibration(val, seed=3)[1]
    assert [a.positions[0, 2] for a in again] == [a.positions[0, 2] for a in cal]
    seeds = {frozenset(a.info["trajectory"] for a in carve_calibration(val, seed=s)[1])
             for s in range(10)}
    assert len(seeds) > 1  # the seed chooses which trajectories calibrate
    one = _frames(1)
    rest, cal = carve_calibration(one, seed=0)
    assert rest == one and cal == []  # too small to split: no calibration split


def test_frames_without_trajectories_split_by_frame():
    rest, cal = carve_calibration(_frames(9), seed=0)
    assert (len(rest), len(cal)) == (5, 4)


def _prediction(mu: np.ndarray, sigma: np.ndarray, df=None) -> Prediction:
    n = mu.size
    return Prediction(np.ones(n, int), mu, sigma, np.zeros((n, 3)), np.ones((n, 3)),
                      energy_df=df)


def test_conformal_factor_is_the_corrected_order_statistic():
    """n = 19 calibration values: ceil(20 x 0.95) = 19, the largest score."""
    structures = _frames(19)
    mu = -np.arange(1, 20, dtype=float)  # |y - mu| = 1..19, y = 0
    sigma = np.full(19, 1.0)
    factors = conformal_factors(_prediction(mu, sigma), structures)
    from scipy import stats

    assert factors["energy"] == pytest.approx(19 / stats.norm.ppf(0.975), rel=1e-12)
    # n = 18 is too small for a 95 % guarantee: ceil(19 x 0.95) = 19 > 18
    assert conformal_factors(_prediction(mu[:18], sigma[:18]), structures[:18])[
        "energy"] == np.inf


def test_conformal_coverage_is_guaranteed_for_a_misspecified_model():
    """Heavy-tailed errors (Student-t, 2.5 df) under a Gaussian with the wrong scale: the
    scalar (NLL) factor misses 95 % coverage, the conformal one holds it on average over
    calibration draws, between 0.95 and 0.95 + 1/(n + 1)."""
    rng = np.random.default_rng(7)
    n_cal, n_test, trials = 39, 400, 300
    cal_frames = _frames(n_cal)
    covered, covered_scalar = [], []
    for _ in range(trials):
        err_cal = rng.standard_t(2.5, n_cal) * 0.3
        err_test = rng.standard_t(2.5, n_test) * 0.3
        sigma_cal = np.full(n_cal, 0.05)
        sigma_test = np.full(n_test, 0.05)
        cal_pred = _prediction(-err_cal, sigma_cal)
        factor = fit("conformal", cal_pred, cal_frames)
        scalar = fit("scalar", cal_pred, cal_frames)
        for f, out in ((factor, covered), (scalar, covered_scalar)):
            test = apply(_prediction(-err_test, sigma_test), f)
            out.append(F.coverage(np.zeros(n_test), test.energy_mean, test.energy_std,
                                  level=0.95))
    mean = float(np.mean(covered))
    assert 0.95 - 0.006 <= mean <= 0.95 + 1 / (n_cal + 1) + 0.006, mean
    assert np.mean(covered_scalar) > 0.96 or np.mean(covered_scalar) < 0.94


def test_conformal_on_student_t_covers_as_the_coverage_metric_counts():
    """A Student-t prediction's interval is mean ± (its unit-std quantile) x std: the
    conformal factor must use that quantile, so the recalibrated intervals hold >= 95 % of
    the calibration values themselves (the finite-sample rank guarantees it)."""
    from uqbench.metrics.functions import coverage, standard_quantile

    rng = np.random.default_rng(1)
    n = 199
    structures = _frames(n)
    truth = np.array([a.info["energy"] for a in structures]) / np.array(
        [len(a) for a in structures])
    mu = truth + rng.normal(size=n)
    df = np.full(n, 2.5)  # heavy tails: std = scale x sqrt(5)
    factors = conformal_factors(_prediction(mu * 1.0, np.ones(n) * 1.0, df=df), structures)
    # (the rank-th value lies on the interval's edge: a hair of slack for rounding)
    assert coverage(truth, mu, np.full(n, factors["energy"] * (1 + 1e-12)), df=df) >= 0.95
    half = standard_quantile(np.float64(0.975), df[:1])[0] * factors["energy"]
    assert half == pytest.approx(np.sort(np.abs(mu - truth))[int(np.ceil(0.95 * (n + 1))) - 1])
