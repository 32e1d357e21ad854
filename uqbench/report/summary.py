"""The table `uqbench run` prints: the headline metrics of one record."""

from __future__ import annotations

#: The built-in metrics of the printed summary; every plugin metric is added after them.
SUMMARY_METRICS = ("crps", "nll", "spearman", "miscalibration_area", "coverage_95", "rmse",
                   "ood_auroc", "ood_auroc_size_only")


def summary_table(record: dict, metrics: tuple[str, ...] | None = None) -> str:
    """A short text table of the headline metrics of one record: a row per split and
    target with its unit and number of labelled structures; each column headed by the
    metric, its better direction (↓ lower, ↑ higher, → nearer its ideal) and its unit
    where it has one of its own ("unit" = the row's unit)."""
    import pandas as pd

    from uqbench.metrics.table import ARROWS, BUILTIN, TARGET_UNITS
    from uqbench.runner import metric_specs

    specs = {spec.key: spec for spec in metric_specs()}
    if metrics is None:
        builtin = {m.key for m in BUILTIN}
        metrics = SUMMARY_METRICS + tuple(k for k in specs if k not in builtin)
    headers = {}
    for key in metrics:
        spec = specs.get(key)
        if spec is None:
            headers[key] = key
            continue
        unit = "" if spec.unit in ("", "target") else f" [{spec.unit}]"
        ideal = f"{spec.ideal:g}" if spec.direction == "target" and spec.ideal is not None else ""
        headers[key] = f"{key}{ARROWS.get(spec.direction, '')}{ideal}{unit}"
    rows = []
    for split, targets in record["metrics"].items():
        for target, values in targets.items():
            row = {"split": split, "target": target, "unit": TARGET_UNITS.get(target, ""),
                   "n": values.get("n_structures", values.get("n_targets"))}
            row.update({headers[m]: values.get(m) for m in metrics})
            rows.append(row)
    frame = pd.DataFrame(rows).set_index(["split", "target", "unit", "n"])
    frame = frame.apply(pd.to_numeric, errors="coerce")
    return frame.to_string(float_format=lambda v: f"{v:.4g}", na_rep="-")
