"""Paired comparison of two methods: relative improvement per seed, then mean and spread."""

from __future__ import annotations

import pandas as pd

from uqbench.errors import UQBenchError
from uqbench.metrics.table import BUILTIN

_DIRECTIONS = {m.key: m.direction for m in BUILTIN}


def relative_improvement(frame: pd.DataFrame, method: str, baseline: str,
                         metric: str = "crps") -> pd.DataFrame:
    """Improvement of ``method`` over ``baseline`` in % of the baseline, paired by seed.

    For a lower-is-better metric: 100 (baseline - method) / baseline; for higher-is-better:
    100 (method - baseline) / |baseline|. One row per dataset x train size x split x
    target, with the mean, standard deviation, min and max over the paired seeds.
    """
    direction = _DIRECTIONS.get(metric)
    if direction not in ("lower", "higher"):
        raise UQBenchError(f"metric {metric!r} has no lower/higher direction to compare")
    for key in (method, baseline):
        if key not in set(frame["method"]):
            raise UQBenchError(f"no results for method {key!r}")
    keys = ["dataset", "train_size", "split", "target", "seed"]
    sub = frame[(frame["metric"] == metric) & ~frame["quick"]]
    a = sub[sub["method"] == method].set_index(keys)["value"]
    b = sub[sub["method"] == baseline].set_index(keys)["value"]
    paired = pd.concat({"method": a, "baseline": b}, axis=1, join="inner").dropna()
    if paired.empty:
        raise UQBenchError(f"no runs of {method!r} and {baseline!r} share a configuration")
    if direction == "lower":
        imp = 100 * (paired["baseline"] - paired["method"]) / paired["baseline"]
    else:
        imp = 100 * (paired["method"] - paired["baseline"]) / paired["baseline"].abs()
    paired["improvement_pct"] = imp
    group = paired.groupby(level=["dataset", "train_size", "split", "target"], sort=True)
    out = group["improvement_pct"].agg(["mean", "std", "min", "max", "count"])
    out = out.rename(columns=lambda c: f"improvement_pct_{c}" if c != "count" else "n_seeds")
    out[f"{method}_mean"] = group["method"].mean()
    out[f"{baseline}_mean"] = group["baseline"].mean()
    return out.reset_index()
