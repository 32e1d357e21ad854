"""The ranked table of a dataset: one row per method configuration at one training size,
the headline metrics as seed means with 95 % Student-t intervals, sorted by one column.

A row's headline value per seed is the metric on ``test``, or its mean over the ``ood-*``
splits; the interval is the mean's over seeds. A row whose seeds include a collapsed run
is ranked apart (never first). The best row of a column is marked only where its interval
does not overlap the runner-up's: a conservative test (a paired interval would separate
more), chosen because rows need not share seeds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from uqbench.report.compare import t_half_width


@dataclass(frozen=True)
class Headline:
    """One column of the ranked table."""

    key: str
    metric: str
    split: str  # "test", or "ood" for the mean over every ood-* split
    target: str
    label: str


HEADLINES = (
    Headline("test_forces_crps", "crps", "test", "forces", "CRPS test forces"),
    Headline("test_energy_crps", "crps", "test", "energy", "CRPS test energy"),
    Headline("ood_forces_crps", "crps", "ood", "forces", "CRPS OOD forces"),
    Headline("ood_energy_crps", "crps", "ood", "energy", "CRPS OOD energy"),
    Headline("test_forces_spearman", "spearman", "test", "forces", "Spearman test forces"),
    Headline("test_forces_miscalibration", "miscalibration_area", "test", "forces",
             "miscalibration test forces"),
    Headline("test_forces_coverage", "coverage_95", "test", "forces",
             "95 % coverage test forces"),
    Headline("ood_forces_auroc", "ood_auroc", "ood", "forces", "OOD ROC-AUC forces"),
    Headline("ood_energy_auroc", "ood_auroc", "ood", "energy", "OOD ROC-AUC energy"),
)
DEFAULT_SORT = "test_forces_crps"
REFERENCE = {"ood_auroc": "ood_auroc_size_only"}  # each metric's trivial reference


def interval_half_width(values: np.ndarray) -> float:
    """Half-width of the 95 % Student-t interval of the mean of ``values`` (NaN below 2
    values or with a non-finite one)."""
    values = np.asarray(values, dtype=float)
    if values.size < 2 or not np.all(np.isfinite(values)):
        return float("nan")
    return t_half_width(float(values.std(ddof=1)), values.size)


def _per_run(frame: pd.DataFrame, metric: str, split: str, target: str) -> pd.Series:
    """The headline value of every run (indexed by run id): test, or the ood-* mean."""
    part = frame[(frame["metric"] == metric) & (frame["target"] == target)]
    part = part[part["split"] == "test"] if split == "test" else \
        part[part["split"].str.startswith("ood")]
    return part.groupby("run_id")["value"].mean()


def ranked(frame: pd.DataFrame, train_size: int, directions: dict[str, str],
           ideals: dict[str, float] | None = None, sort: str = DEFAULT_SORT) -> pd.DataFrame:
    """The ranked rows of ``frame`` (the tidy results of one dataset) at ``train_size``.

    Columns: ``label``, ``method``, ``seeds``, ``collapsed`` (seeds), for each headline
    ``<key>`` (mean), ``<key>_half`` (interval half-width), ``<key>_best`` (bool), and the
    size-only reference ``<key>_reference`` where the metric has one; ``fit_s`` and
    ``predict_ms``. Sorted by ``sort`` (better first; collapsed rows last).
    """
    ideals = ideals or {}
    part = frame[(frame["train_size"] == train_size) & ~frame["quick"].astype(bool)]
    runs = part.drop_duplicates("run_id").set_index("run_id")
    rows = []
    values_of = dict(tuple(part.groupby("label", sort=False)))  # each row filtered once
    for label, group in runs.groupby("label", sort=True):
        rows_of = values_of[label]
        row = {"label": label, "method": group["method"].iloc[0],
               "seeds": int(group["seed"].nunique()),
               "collapsed": int(group["collapsed"].fillna(False).astype(bool).sum()),
               "fit_s": float(group["fit_s"].mean()),
               "predict_ms": float(1e3 * group["predict_s_per_structure"].mean())}
        for h in HEADLINES:
            values = _per_run(rows_of, h.metric, h.split, h.target)
            row[h.key] = float(values.mean()) if len(values) else float("nan")
            row[f"{h.key}_half"] = interval_half_width(values.to_numpy())
            if h.metric in REFERENCE:
                ref = _per_run(rows_of, REFERENCE[h.metric],
                               h.split, h.target)
                row[f"{h.key}_reference"] = float(ref.mean()) if len(ref) else float("nan")
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    for h in HEADLINES:
        table[f"{h.key}_best"] = _best(table, h, directions.get(h.metric, ""),
                                       ideals.get(h.metric))
    return sort_rows(table, sort, directions, ideals)


def _badness(values: pd.Series, direction: str, ideal: float | None) -> pd.Series:
    """Smaller is better, whatever the metric's direction."""
    if direction == "higher":
        return -values
    if direction == "target":
        return (values - (ideal if ideal is not None else 0.0)).abs()
    return values


def _best(table: pd.DataFrame, h: Headline, direction: str, ideal: float | None
          ) -> pd.Series:
    """True on the single best uncollapsed row whose interval clears the runner-up's."""
    best = pd.Series(False, index=table.index)
    if direction not in ("lower", "higher", "target"):
        return best
    live = table[(table["collapsed"] == 0) & table[h.key].notna()
                 & table[f"{h.key}_half"].notna()]
    if len(live) < 2:
        return best
    bad = _badness(live[h.key], direction, ideal).sort_values()
    first, second = bad.index[0], bad.index[1]
    if direction == "target":  # the interval of |x - ideal| is not the interval of x
        lo1 = abs(live.at[first, h.key] - ideal) if ideal is not None else np.nan
        clear = (live.at[first, f"{h.key}_half"] + live.at[second, f"{h.key}_half"]
                 < bad[second] - lo1)
    else:
        clear = (bad[first] + live.at[first, f"{h.key}_half"]
                 < bad[second] - live.at[second, f"{h.key}_half"])
    best[first] = bool(clear)
    return best


def sort_rows(table: pd.DataFrame, key: str, directions: dict[str, str],
              ideals: dict[str, float] | None = None) -> pd.DataFrame:
    """``table`` sorted by column ``key``, better first, collapsed rows and NaN last."""
    ideals = ideals or {}
    metric = next((h.metric for h in HEADLINES if h.key == key), None)
    bad = _badness(table[key], directions.get(metric, "lower"), ideals.get(metric))
    order = pd.DataFrame({"c": table["collapsed"] > 0, "n": bad.isna(), "b": bad})
    return table.loc[order.sort_values(["c", "n", "b"]).index].reset_index(drop=True)
