"""Active learning: the acquisition rule, the loop on a toy with an exact oracle, and the
`uqbench al` command (records per round, resume)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from uqbench.active import acquisition_scores, run_loop, select
from uqbench.cli import main
from uqbench.prediction import Prediction


def test_select_takes_the_highest_and_a_constant_score_is_random():
    rng = np.random.default_rng(0)
    assert sorted(select(np.array([0.1, 5.0, 0.3, 4.0]), 2, rng)) == [1, 3]
    scores = np.full(50, 0.7)
    a = select(scores, 10, np.random.default_rng(3))
    b = select(None, 10, np.random.default_rng(3), n=50)
    assert list(a) == list(b)


def test_force_score_is_the_largest_per_atom_std_of_each_structure():
    forces_std = np.array([[1, 0, 0], [0, 3, 4], [0, 0, 2], [1, 1, 1]], dtype=float)
    p = Prediction(n_atoms=np.array([2, 2]), energy_mean=np.zeros(2),
                   energy_std=np.array([0.5, 0.1]), forces_mean=np.zeros((4, 3)),
                   forces_std=forces_std)
    assert acquisition_scores(p, "force_std") == pytest.approx([5.0, 2.0])
    assert acquisition_scores(p, "energy_std") == pytest.approx([0.5, 0.1])
    assert acquisition_scores(p, "random") is None


def _toy(acquisition: str, seed: int) -> float:
    """1-D regression with a sharp feature; nearest-neighbour model; the final test RMSE."""
    from sklearn.neighbors import KNeighborsRegressor

    rng = np.random.default_rng(seed)
    truth = lambda x: np.sin(2 * np.pi * x) + 3 * np.exp(-((x - 0.8) / 0.03) ** 2)  # noqa: E731
    pool = rng.uniform(0, 1, 400)
    grid = np.linspace(0, 1, 2000)

    def fit(labelled):
        x = pool[labelled]
        return KNeighborsRegressor(n_neighbors=1).fit(x[:, None], truth(x))

    def evaluate(model):
        return {"rmse": float(np.sqrt(np.mean((model.predict(grid[:, None]) - truth(grid))
                                              ** 2)))}

    def scores(model, rest):
        if acquisition == "oracle":  # the true error: an "uncertainty" that is exact
            return np.abs(model.predict(pool[rest][:, None]) - truth(pool[rest]))
        if acquisition == "constant":
            return np.ones(len(rest))
        return None

    rounds = run_loop(len(pool), 10, 5, 8, seed, fit, evaluate, scores)
    return rounds[-1]["scores"]["rmse"], [r["labelled"] for r in rounds]


def test_an_exact_uncertainty_beats_random_and_a_constant_one_equals_it():
    oracle = [_toy("oracle", s)[0] for s in range(8)]
    random_ = [_toy("random", s)[0] for s in range(8)]
    assert np.mean(oracle) < 0.7 * np.mean(random_)
    for seed in range(3):
        assert _toy("constant", seed)[1] == _toy("random", seed)[1]


def test_al_command_writes_a_record_per_round_and_resumes(tmp_path):
    args = ["al", "-m", "egnn", "-d", "nbody", "--quick", "--rounds", "2", "--initial", "8",
            "--batch", "4", "-p", "max_steps=4", "--out", str(tmp_path)]
    assert main(args) == 0
    records = sorted(tmp_path.rglob("round-*.json"))
    assert len(records) == 3
    data = [json.loads(p.read_text()) for p in records]
    assert [d["n_labelled"] for d in data] == [8, 12, 16]
    for before, after in zip(data, data[1:], strict=False):
        assert sorted(before["labelled"] + before["acquired"]) == after["labelled"]
    assert "rmse" in data[0]["scores"]["test"]["forces"]
    assert data[-1]["acquired"] == []
    # a killed run resumes at its last finished round and makes the same choices
    records[-1].unlink()
    stamp = records[0].stat().st_mtime_ns
    assert main(args) == 0
    assert records[0].stat().st_mtime_ns == stamp  # round 0 was not redone
    assert json.loads(records[-1].read_text())["labelled"] == data[-1]["labelled"]


@pytest.mark.parametrize("extra, needle", [
    (["--acquisition", "magic"], "magic"),
    (["--initial", "0"], "--initial"),
    (["--batch", "0"], "--batch"),
    (["--pool-size", "10", "--initial", "20"], "--pool-size"),
])
def test_al_bad_input_is_one_line(tmp_path, capsys, extra, needle):
    assert main(["al", "-m", "egnn", "-d", "nbody", "--quick", "--out", str(tmp_path),
                 *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]
    assert not list(tmp_path.rglob("*.json"))


def test_labels_to_reach_interpolates_and_says_never():
    from uqbench.report.al import labels_to_reach

    assert labels_to_reach([10, 20, 30], [1.0, 0.5, 0.2], 0.5) == 20
    assert labels_to_reach([10, 20, 30], [1.0, 0.6, 0.2], 0.4) == pytest.approx(25.0)
    assert np.isnan(labels_to_reach([10, 20], [1.0, 0.9], 0.5))


def test_label_saving_against_random_per_seed():
    import pandas as pd

    from uqbench.report.al import label_saving

    rows = []
    for seed in range(5):
        for n, (r, u) in zip((10, 20, 30, 40), ((1.0, 1.0), (0.8, 0.6), (0.6, 0.45),
                                               (0.45 + 0.01 * seed, 0.4)), strict=True):
            for acq, value in (("random", r), ("force_std", u)):
                rows.append(dict(dataset="toy", method="m", acquisition=acq, seed=seed,
                                 round=n // 10 - 1, n_labelled=n, split="test",
                                 target="forces", metric="rmse", value=value))
    table = label_saving(pd.DataFrame(rows))
    row = table.iloc[0]
    assert row["acquisition"] == "force_std" and row["n_seeds"] == 5
    assert 0 < row["saving_pct_mean"] < 50 and row["verdict"] == "better"
