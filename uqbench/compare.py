"""Paired comparison of two methods: relative improvement per seed, then mean and spread."""

from __future__ import annotations

import pandas as pd

from uqbench.errors import UQBenchError
from uqbench.metrics.table import BUILTIN

_DIRECTIONS = {m.key: m.direction for m in BUILTIN}


def relative_improvement(frame: pd.DataFrame, method: str, baseline: str,
                         metric: str = "crps", include_collapsed: bool = False) -> pd.DataFrame:
    """Improvement of ``method`` over ``baseline`` in % of the baseline, paired by seed.

    For a lower-is-better metric: 100 (baseline - method) / baseline; for higher-is-better:
    100 (method - baseline) / |baseline|. One row per dataset x train size x split x
    target, with the mean, standard deviation, min and max over the paired seeds. A seed
    where either run is ``collapsed`` is left out of the pairing unless
    ``include_collapsed`` (``n_collapsed_excluded`` counts them per row).
    """
    direction = _DIRECTIONS.get(metric)
    if direction not in ("lower", "higher"):
        raise UQBenchError(f"metric {metric!r} has no lower/higher direction to compare")
    for key in (method, baseline):
        if key not in set(frame["method"]):
            raise UQBenchError(f"no results for method {key!r}")
    keys = ["dataset", "train_size", "split", "target", "seed"]
    sub = frame[(frame["metric"] == metric) & ~frame["quick"]]
    a = sub[sub["method"] == method].set_index(keys)
    b = sub[sub["method"] == baseline].set_index(keys)
    paired = pd.concat({"method": a["value"], "baseline": b["value"]}, axis=1, join="inner")
    flag = pd.concat({"a": a["collapsed"], "b": b["collapsed"]}, axis=1, join="inner")
    bad = flag.fillna(False).astype(bool).any(axis=1)
    excluded = bad.groupby(level=["dataset", "train_size", "split", "target"]).sum()
    if not include_collapsed:
        paired = paired[~bad.reindex(paired.index, fill_value=False)]
    if paired.empty:
        why = (" once collapsed runs are left out (--include-collapsed keeps them)"
               if bool(excluded.sum()) and not include_collapsed else "")
        raise UQBenchError(f"no runs of {method!r} and {baseline!r} share a "
                           f"configuration{why}")
    if direction == "lower":
        imp = 100 * (paired["baseline"] - paired["method"]) / paired["baseline"]
    else:
        imp = 100 * (paired["method"] - paired["baseline"]) / paired["baseline"].abs()
    paired["improvement_pct"] = imp
    group = paired.groupby(level=["dataset", "train_size", "split", "target"], sort=True)
    # A NaN seed (a run whose predictions were not finite) makes the row NaN: never dropped.
    out = group["improvement_pct"].agg(
        mean=lambda v: v.mean(skipna=False), std=lambda v: v.std(skipna=False),
        min=lambda v: v.min(skipna=False), max=lambda v: v.max(skipna=False), count="size",
        n_nan=lambda v: int(v.isna().sum()))
    out = out.rename(columns=lambda c: f"improvement_pct_{c}"
                     if c not in ("count", "n_nan") else {"count": "n_seeds"}.get(c, c))
    out[f"{method}_mean"] = group["method"].agg(lambda v: v.mean(skipna=False))
    out[f"{baseline}_mean"] = group["baseline"].agg(lambda v: v.mean(skipna=False))
    out["n_collapsed_excluded"] = (0 if include_collapsed else
                                   excluded.reindex(out.index, fill_value=0).astype(int))
    return out.reset_index()
