"""The ranked table: intervals, the separated-best star, collapsed rows apart."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from uqbench.report.ranking import HEADLINES, interval_half_width, ranked, sort_rows

DIRECTIONS = {"crps": "lower", "spearman": "higher", "miscalibration_area": "lower",
              "coverage_95": "target", "ood_auroc": "higher",
              "ood_auroc_size_only": "reference"}
IDEALS = {"coverage_95": 0.95}


def _frame(values: dict[str, list[float]], collapsed: dict[str, list[bool]] | None = None,
           metric: str = "crps") -> pd.DataFrame:
    rows = []
    for label, seeds in values.items():
        for seed, v in enumerate(seeds):
            run = f"{label}-{seed}"
            bad = bool((collapsed or {}).get(label, [False] * len(seeds))[seed])
            for split in ("test", "ood-a", "ood-b"):
                for target in ("energy", "forces"):
                    rows.append(dict(label=label, method=label, run_id=run, seed=seed,
                                     train_size=100, quick=False, collapsed=bad,
                                     fit_s=1.0, predict_s_per_structure=0.001, split=split,
                                     target=target, metric=metric,
                                     value=v + (1.0 if split == "ood-b" else 0.0)))
    return pd.DataFrame(rows)


def test_half_width_is_the_student_t_interval():
    x = np.array([1.0, 2.0, 4.0, 3.5, 2.5])
    lo, hi = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    assert interval_half_width(x) == pytest.approx((hi - lo) / 2)
    assert np.isnan(interval_half_width(np.array([1.0])))


def test_sorted_by_crps_and_star_only_where_separated():
    table = ranked(_frame({"a": [1.0, 1.1, 0.9], "b": [2.0, 2.1, 1.9], "c": [3.0, 3.2, 2.8]}),
                   100, DIRECTIONS, IDEALS)
    assert list(table["label"]) == ["a", "b", "c"]
    assert table["test_forces_crps_best"].tolist() == [True, False, False]
    # OOD columns average the ood-* splits per seed: (v + v + 1) / 2
    assert table.loc[0, "ood_forces_crps"] == pytest.approx(1.5)
    # overlapping intervals: no star
    close = ranked(_frame({"a": [1.0, 2.0, 0.5], "b": [1.2, 2.1, 0.7]}), 100, DIRECTIONS)
    assert not close["test_forces_crps_best"].any()


def test_collapsed_rows_sit_last_and_never_win():
    table = ranked(_frame({"good": [2.0, 2.1, 1.9], "bad": [0.1, 0.1, 0.1]},
                          collapsed={"bad": [True, False, False]}), 100, DIRECTIONS)
    assert list(table["label"]) == ["good", "bad"]
    assert not table["test_forces_crps_best"].any()  # one live row: nothing to separate


def test_coverage_ranks_by_distance_to_its_ideal():
    frame = _frame({"over": [0.99, 0.995, 0.99], "near": [0.95, 0.951, 0.949],
                    "under": [0.80, 0.81, 0.79]}, metric="coverage_95")
    table = sort_rows(ranked(frame, 100, DIRECTIONS, IDEALS), "test_forces_coverage",
                      DIRECTIONS, IDEALS)
    assert list(table["label"]) == ["near", "over", "under"]
    assert table.loc[0, "test_forces_coverage_best"]


def test_every_headline_is_a_registered_metric():
    from uqbench.metrics.table import metric_info

    info = metric_info()
    for h in HEADLINES:
        assert h.metric in info, h.metric
