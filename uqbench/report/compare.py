"""Paired comparison of two methods: relative improvement per seed, then mean and spread."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from uqbench.errors import UQBenchError

#: Confidence of the interval `relative_improvement` reports.
CONFIDENCE = 0.95


def t_half_width(std: float, n: int, confidence: float = CONFIDENCE) -> float:
    """Half-width of the Student-t interval of a mean of ``n`` values with sample std
    ``std``: t_{(1+c)/2, n-1} std / sqrt(n); NaN below 2 values. The one home of the
    interval every table and comparison reports."""
    if n < 2 or not np.isfinite(std):
        return float("nan")
    return float(stats.t.ppf(0.5 + confidence / 2, n - 1) * std / np.sqrt(n))


def t_interval(values: pd.Series, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Student-t interval of the mean of ``values`` (paired per-seed differences):
    mean ± `t_half_width`; NaN bounds with fewer than 2 values or a NaN."""
    v = np.asarray(values, dtype=float)
    if v.size < 2 or np.isnan(v).any():
        return float("nan"), float("nan")
    half = t_half_width(float(v.std(ddof=1)), v.size, confidence)
    return float(v.mean() - half), float(v.mean() + half)


def verdict(low: float, high: float) -> str:
    """``better`` or ``worse`` where the interval of the improvement excludes zero, else
    ``not resolved``."""
    if low > 0:
        return "better"
    if high < 0:
        return "worse"
    return "not resolved"


def _one_configuration(part: pd.DataFrame, who: str, flag: str, wanted: str | None
                       ) -> pd.DataFrame:
    """The runs of one configuration of a method per dataset: the one given (a prefix of
    its hash), or the only one there is, or, where the configurations differ only in
    recalibration, the raw one (the others re-score the same fits); several otherwise
    without a choice is a one-line error. ``wanted`` is a hash prefix or a variant
    (``raw``, ``recalibrated scalar`` or just ``scalar``)."""
    if "config" not in part:  # a frame made by hand: one configuration
        return part
    if wanted and "variant" in part:
        variant = part["variant"].fillna("raw").astype(str)
        chosen = part[(variant == wanted) | (variant == f"recalibrated {wanted}")]
        if not chosen.empty:
            return chosen
    if wanted:
        part = part[part["config"].astype(str).str.startswith(wanted)]
        if part.empty:
            raise UQBenchError(f"no configuration of {who} starts with {wanted!r}")
        return part
    keep = []
    for dataset, runs in part.groupby("dataset"):
        configs = runs.drop_duplicates("config")
        variants = list(configs["variant"])
        if (len(configs) > 1 and variants.count("raw") == 1
                and all(v == "raw" or str(v).startswith("recalibrated ") for v in variants)):
            keep.append(runs[runs["variant"] == "raw"])
            continue
        keep.append(runs)
        if len(configs) > 1:
            listed = "; ".join(f"{c} = {v or '(no label)'}" for c, v in
                               zip(configs["config"], configs["variant"], strict=True))
            raise UQBenchError(f"{who} has {len(configs)} configurations on {dataset} "
                               f"({listed}); choose one with {flag} HASH")
    return pd.concat(keep) if keep else part


def relative_improvement(frame: pd.DataFrame, method: str, baseline: str,
                         metric: str = "crps", include_collapsed: bool = False,
                         method_config: str | None = None,
                         baseline_config: str | None = None,
                         dataset: str | None = None,
                         allow_unequal_budgets: bool = False) -> pd.DataFrame:
    """Improvement of ``method`` over ``baseline`` in % of the baseline, paired by seed.

    For a lower-is-better metric: 100 (baseline - method) / baseline; for higher-is-better:
    100 (method - baseline) / |baseline|. One row per dataset x train size x split x
    target, with the mean, standard deviation, min and max over the paired seeds, the
    95 % Student-t interval of the mean paired improvement (``improvement_pct_ci_low`` /
    ``_high``, over ``n_seeds`` pairs) and a ``verdict``: better or worse only where that
    interval excludes zero, else not resolved. A seed where either run is ``collapsed`` is
    left out of the pairing unless ``include_collapsed`` (``n_collapsed_excluded`` counts
    them per row). ``dataset`` restricts the comparison to one dataset. Runs whose
    optimiser steps per model differ are not compared (a one-line error naming both
    budgets) unless ``allow_unequal_budgets``.
    """
    if dataset is not None:
        if dataset not in set(frame["dataset"]):
            raise UQBenchError(f"no results for dataset {dataset!r}")
        frame = frame[frame["dataset"] == dataset]
    rows = frame[frame["metric"] == metric]
    if "direction" in rows and not rows.empty:  # from its spec, as recorded or registered
        direction = rows["direction"].iloc[0]
    else:
        from uqbench.metrics.table import metric_info

        direction = (metric_info().get(metric) or {}).get("direction", "unknown")
    if direction not in ("lower", "higher"):
        raise UQBenchError(f"metric {metric!r} has no lower/higher direction to compare "
                           f"(its direction: {direction})")
    if rows.empty:
        raise UQBenchError(f"no results for metric {metric!r}")
    for key in (method, baseline):
        if key not in set(frame["method"]):
            raise UQBenchError(f"no results for method {key!r}")
    keys = ["dataset", "train_size", "split", "target", "seed"]
    sub = rows[~rows["quick"]]  # quick runs are smoke tests: never compared
    if sub.empty:
        raise UQBenchError("only quick runs were found, and quick runs are smoke tests that "
                           "are never compared: run the methods without --quick to compare "
                           "them")
    a = _one_configuration(sub[sub["method"] == method], method, "--method-config",
                           method_config)
    b = _one_configuration(sub[sub["method"] == baseline], baseline, "--baseline-config",
                           baseline_config)
    # Pairs must share the run settings that change numbers besides the method.
    a, b = a.set_index(keys), b.set_index(keys)
    if "threads" not in a:
        a = a.assign(threads=None)
        b = b.assign(threads=None)
    same = a["threads"].reindex(b.index).eq(b["threads"]).reindex(a.index, fill_value=False)
    mismatched = int((~same & a.index.isin(b.index)).sum())
    if mismatched:
        raise UQBenchError(f"{mismatched} pair(s) of {method!r} and {baseline!r} ran at "
                           "different thread counts; compare runs made alike")
    if "steps_per_model" in a and not allow_unequal_budgets:
        _check_budgets(a, b, method, baseline)
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
    bounds = group["improvement_pct"].apply(t_interval)
    out["improvement_pct_ci_low"] = [lo for lo, _ in bounds]
    out["improvement_pct_ci_high"] = [hi for _, hi in bounds]
    out["verdict"] = [verdict(lo, hi) for lo, hi in bounds]
    out[f"{method}_mean"] = group["method"].agg(lambda v: v.mean(skipna=False))
    out[f"{baseline}_mean"] = group["baseline"].agg(lambda v: v.mean(skipna=False))
    out["n_collapsed_excluded"] = (0 if include_collapsed else
                                   excluded.reindex(out.index, fill_value=0).astype(int))
    return out.reset_index()


def markdown(table: pd.DataFrame, method: str, baseline: str, digits: int = 3) -> str:
    """The comparison as a Markdown table: per training size, split and target the mean
    paired improvement in % with its 95 % interval, n, the verdict and both means."""
    lines = [f"| train size | split | target | n | improvement % [95 % interval] | verdict "
             f"| {method} | {baseline} |", "|---:|---|---|---:|---|---|---:|---:|"]
    for row in table.to_dict("records"):
        interval = (f"{row['improvement_pct_mean']:+.1f} [{row['improvement_pct_ci_low']:+.1f}, "
                    f"{row['improvement_pct_ci_high']:+.1f}]")
        lines.append(f"| {row['train_size']} | {row['split']} | {row['target']} "
                     f"| {row['n_seeds']} | {interval} | {row['verdict']} "
                     f"| {row[f'{method}_mean']:.{digits}g} "
                     f"| {row[f'{baseline}_mean']:.{digits}g} |")
    return "\n".join(lines)


def _check_budgets(a: pd.DataFrame, b: pd.DataFrame, method: str, baseline: str) -> None:
    """One line naming both budgets where paired runs spent different optimiser steps per
    model (a record without a budget is unknown: equal only to another unknown)."""
    steps_a = a["steps_per_model"].reindex(b.index)
    steps_b = b["steps_per_model"]
    shared = b.index.isin(a.index)
    same = steps_a.eq(steps_b) | (steps_a.isna() & steps_b.isna())
    differ = shared & ~same.to_numpy()
    if differ.any():
        def budgets(values: pd.Series) -> str:
            known = sorted({int(v) for v in values.dropna()})
            text = ", ".join(map(str, known)) or "unknown"
            return text + (" and unknown" if values.isna().any() and known else "")

        raise UQBenchError(
            f"{method!r} spent {budgets(steps_a[differ])} optimiser steps per model and "
            f"{baseline!r} {budgets(steps_b[differ])}: unequal budgets are not a fair "
            "comparison (run both with the same max_steps, or pass --allow-unequal-budgets)")
