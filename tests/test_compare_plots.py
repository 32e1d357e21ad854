"""The paired comparison and the CRPS-vs-training-size figure, on hand-made records."""

import pandas as pd
import pytest

from uqbench.cli import main
from uqbench.report.compare import relative_improvement
from uqbench.report.tables import load_records, tidy
from uqbench.results import write_json_atomic

CRPS = {("p", 100, 0): 0.8, ("p", 100, 1): 0.6, ("b", 100, 0): 1.0, ("b", 100, 1): 1.0,
        ("p", 1000, 0): 0.5, ("b", 1000, 0): 0.4}


def _record(method, size, seed, crps):
    return {
        "schema_version": 1, "run_id": f"{method}-{size}-{seed}", "train_size": size,
        "seed": seed, "quick": False, "method": {"key": method}, "dataset": {"key": "toy"},
        "timings": {"fit_s": 1.0, "predict_s_per_structure": 0.1}, "provenance": {},
        "metrics": {split: {"energy": {"crps": crps, "spearman": 0.5}}
                    for split in ("test", "ood-x")},
    }


@pytest.fixture
def results(tmp_path):
    for (method, size, seed), crps in CRPS.items():
        write_json_atomic(tmp_path / "r" / method / f"{size}-{seed}.json",
                          _record(method, size, seed, crps))
    return tmp_path / "r"


def test_relative_improvement_is_paired_by_seed(results):
    frame = tidy(load_records(results)[0])
    table = relative_improvement(frame, "p", "b", "crps")
    row = table[(table["train_size"] == 100) & (table["split"] == "test")].iloc[0]
    assert row["improvement_pct_mean"] == pytest.approx(30.0)  # (20 % + 40 %) / 2
    assert row["improvement_pct_std"] == pytest.approx(pd.Series([20.0, 40.0]).std())
    assert row["n_seeds"] == 2
    row = table[(table["train_size"] == 1000) & (table["split"] == "test")].iloc[0]
    assert row["improvement_pct_mean"] == pytest.approx(-25.0)  # worse than the baseline


def test_higher_is_better_metric_and_bad_requests(results):
    frame = tidy(load_records(results)[0])
    table = relative_improvement(frame, "p", "b", "spearman")
    assert (table["improvement_pct_mean"] == 0).all()
    with pytest.raises(Exception, match="no results"):
        relative_improvement(frame, "p", "nope", "crps")
    with pytest.raises(Exception, match="direction"):
        relative_improvement(frame, "p", "b", "coverage_95")


def test_leaderboard_draws_crps_vs_train_size(results, tmp_path):
    out = tmp_path / "lb"
    assert main(["leaderboard", "--results", str(results), "--out", str(out)]) == 0
    png = out / "toy-crps-vs-train-size.png"
    assert png.exists() and png.stat().st_size > 10_000
    assert main(["compare", "--results", str(results), "-m", "p", "-b", "b",
                 "--out", str(out / "cmp.csv")]) == 0
    assert len(pd.read_csv(out / "cmp.csv")) == 4
