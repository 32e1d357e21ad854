"""Property-based tests (hypothesis): the metrics on random finite, NaN and zero-std
inputs, and the extxyz reader on random labelled structures."""

from __future__ import annotations

import numpy as np
import pytest
import scoringrules as sr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from uqbench.metrics import functions as F

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)
positive = st.floats(1e-3, 1e3, allow_nan=False, allow_infinity=False)
SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def gaussian_case(draw, min_size=2):
    n = draw(st.integers(min_size, 40))
    y = draw(arrays(np.float64, n, elements=finite))
    mu = draw(arrays(np.float64, n, elements=finite))
    sd = draw(arrays(np.float64, n, elements=positive))
    return y, mu, sd


@SETTINGS
@given(gaussian_case())
def test_metrics_on_finite_inputs_are_finite_and_in_range(case):
    y, mu, sd = case
    assert F.crps_gaussian(y, mu, sd) >= 0
    assert np.isfinite(F.nll_gaussian(y, mu, sd))
    assert 0 <= F.coverage(y, mu, sd, level=0.95) <= 1
    assert 0 <= F.miscalibration_area(y, mu, sd) <= 0.5 + 1e-12
    assert F.ence(y, mu, sd) >= 0
    assert F.sharpness(sd) == pytest.approx(np.sqrt(np.mean(sd**2)))
    assert F.rmse(y, mu) >= F.mae(y, mu) - 1e-9


@SETTINGS
@given(gaussian_case(), st.data())
def test_a_nan_anywhere_gives_nan_never_an_exception(case, data):
    y, mu, sd = (a.copy() for a in case)
    where = data.draw(st.sampled_from(["y", "mu", "sd"]))
    k = data.draw(st.integers(0, len(y) - 1))
    {"y": y, "mu": mu, "sd": sd}[where][k] = np.nan
    for value in (F.crps_gaussian(y, mu, sd), F.nll_gaussian(y, mu, sd),
                  F.miscalibration_area(y, mu, sd), F.ence(y, mu, sd),
                  F.coverage(y, mu, sd, level=0.95),
                  F.spearman_abs_error_std(y, mu, sd)):
        assert np.isnan(value)


@SETTINGS
@given(gaussian_case())
def test_a_zero_std_makes_the_nll_infinite_and_raises_nothing(case):
    y, mu, sd = case
    sd = sd.copy()
    sd[0] = 0.0
    mu = mu.copy()
    mu[0] = y[0] + 1.0  # a confident miss
    assert F.nll_gaussian(y, mu, sd) == np.inf
    # defined or NaN, never an exception, and inside each metric's range where defined
    crps = F.crps_gaussian(y, mu, sd)
    assert np.isnan(crps) or crps >= 0
    area = F.miscalibration_area(y, mu, sd)
    assert np.isnan(area) or 0 <= area <= 1
    ence = F.ence(y, mu, sd)
    assert np.isnan(ence) or ence >= 0
    cover = F.coverage(y, mu, sd, level=0.95)
    assert np.isnan(cover) or 0 <= cover <= 1


@SETTINGS
@given(st.integers(2, 12), st.integers(1, 20), st.data())
def test_fair_crps_matches_scoringrules_on_random_ensembles(m, n, data):
    y = data.draw(arrays(np.float64, n, elements=finite))
    x = data.draw(arrays(np.float64, (m, n), elements=finite))
    expected = np.mean(sr.crps_ensemble(y, x.T, estimator="fair"))
    assert F.crps_ensemble(y, x, fair=True) == pytest.approx(expected, rel=1e-9, abs=1e-9)


@st.composite
def labelled_structure(draw):
    from ase import Atoms

    n = draw(st.integers(1, 5))
    numbers = draw(st.lists(st.sampled_from([1, 8, 14]), min_size=n, max_size=n))
    pos = draw(arrays(np.float64, (n, 3), elements=st.floats(-5, 5, allow_nan=False)))
    forces = draw(arrays(np.float64, (n, 3), elements=st.floats(-50, 50, allow_nan=False)))
    energy = draw(st.floats(-1e4, 1e4, allow_nan=False))
    atoms = Atoms(numbers=numbers, positions=pos, pbc=False)
    atoms.info["energy"] = energy
    atoms.arrays["forces"] = forces
    return atoms


@SETTINGS
@given(st.lists(labelled_structure(), min_size=1, max_size=6))
def test_extxyz_reader_reads_back_what_was_written(tmp_path_factory, frames):
    from ase.io import write

    from uqbench.datasets.extxyz import read_labelled

    path = tmp_path_factory.mktemp("xyz") / "d.xyz"
    write(path, frames, format="extxyz")
    back = read_labelled(path)
    assert len(back) == len(frames)
    for a, b in zip(frames, back, strict=True):
        assert b.info["energy"] == pytest.approx(a.info["energy"], rel=1e-7, abs=1e-6)
        np.testing.assert_allclose(b.arrays["forces"], a.arrays["forces"], atol=1e-6)
        np.testing.assert_allclose(b.positions, a.positions, atol=1e-6)
        assert list(b.numbers) == list(a.numbers)


@SETTINGS
@given(st.lists(labelled_structure(), min_size=1, max_size=4), st.data())
def test_extxyz_reader_refuses_a_nan_label_with_one_message(tmp_path_factory, frames, data):
    from ase.io import write

    from uqbench.datasets.extxyz import read_labelled
    from uqbench.errors import UQBenchError

    k = data.draw(st.integers(0, len(frames) - 1))
    frames[k].arrays["forces"][0, 0] = np.nan
    path = tmp_path_factory.mktemp("xyz") / "d.xyz"
    write(path, frames, format="extxyz")
    with pytest.raises(UQBenchError, match=f"structure {k}"):
        read_labelled(path)
