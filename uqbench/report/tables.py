"""Run records as tables: the tidy frame (one row per run x split x target x metric), the
wide per-dataset table with seed statistics, and its Markdown."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from uqbench.metrics.table import ARROWS, BUILTIN, TARGET_UNITS, metric_info
from uqbench.results import COUNTS, read_record

TIDY_COLUMNS = [
    "dataset", "method", "config", "variant", "label", "train_size", "seed", "quick", "split",
    "target", "metric", "value",
    "unit", "direction", "fit_s", "predict_s_per_structure", "n_parameters", "n_samples",
    "device", "collapsed", "steps_per_model", "threads", "commit", "dirty", "run_id",
]
HEADLINE = ("crps", "nll", "spearman", "spearman_robust", "miscalibration_area", "ence",
            "coverage_95", "rmse", "ood_auroc", "ood_auroc_size_only")


def config_of(record: dict) -> dict:
    """What defines a configuration: the record's config without its seed (nor the data
    seed where it follows the run's) and without the size, which is a column of its own."""
    config = dict(record.get("config") or {})
    config.pop("seed", None)
    config.pop("train_size", None)
    options = dict(config.get("dataset_options") or {})
    options.pop("train_size", None)  # the runner puts the size here too
    if "seed" in options and options["seed"] == record.get("seed"):  # follows the run's
        options.pop("seed")
    config["dataset_options"] = options
    params = dict(config.get("params") or {})
    params.pop("seed", None)
    config["params"] = params
    return config


def _flatten(value, prefix: str = "") -> dict:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}{k}." if prefix or k != "params" else ""))
        return out
    return {prefix.rstrip("."): value}


def variants(records: list[dict]) -> dict[str, tuple[str, str]]:
    """run id -> (configuration hash, label of what differs from the method's other
    configurations on the same dataset; empty when it has only one)."""
    from uqbench.cache import content_hash

    by_method: dict[tuple, dict[str, dict]] = {}
    ids: dict[str, str] = {}
    for r in records:
        config = config_of(r)
        h = content_hash(config)[:8]
        ids[r["run_id"]] = h
        by_method.setdefault((r["dataset"]["key"], r["method"]["key"]), {})[h] = config
    labels: dict[str, str] = {}
    for configs in by_method.values():
        if len(configs) < 2:
            continue
        flat = {h: _flatten(c) for h, c in configs.items()}
        keys = sorted(set().union(*flat.values()))
        differ = [k for k in keys if len({json_text(f.get(k)) for f in flat.values()}) > 1]
        for h, f in flat.items():
            labels[h] = ", ".join(_difference(k, f.get(k)) for k in differ[:4]) + (
                ", ..." if len(differ) > 4 else "")
    return {rid: (h, labels.get(h, "")) for rid, h in ids.items()}


def _difference(key: str, value) -> str:
    """How a label names one differing setting (a recalibration reads as such)."""
    if key == "recalibrate":
        return "raw" if value is None else f"recalibrated {value}"
    return f"{key}={json_text(value)}"


def json_text(value) -> str:
    import json

    return json.dumps(value, sort_keys=True, default=str)


def load_records(results_dir: Path) -> tuple[list[dict], list[str]]:
    """Every valid record under ``results_dir`` and a message per file that was skipped
    (invalid, unreadable, or a second record of a run id already read: one run is one row,
    however many copies of its record lie about)."""
    records, skipped, seen = [], [], {}
    for path in sorted(Path(results_dir).rglob("*.json")):
        try:
            record = read_record(path)
        except (ValueError, OSError) as exc:
            skipped.append(str(exc) if str(path) in str(exc) else f"{path}: {exc}")
            continue
        rid = record["run_id"]
        if rid in seen:
            skipped.append(f"{path}: run id {rid} was already read from {seen[rid]} (one "
                           "run is one row)")
            continue
        seen[rid] = path
        records.append(record)
    return records, skipped


def tidy(records: list[dict]) -> pd.DataFrame:
    """One row per run x split x target x metric, deterministically ordered."""
    rows = []
    known = metric_info()
    config_ids = variants(records)
    for r in records:
        run_facts = _run_facts(r)
        info = {**known, **(r.get("metric_info") or {})}  # the record's own word first
        config, variant = config_ids[r["run_id"]]
        label = r["method"]["key"] + (f" [{variant}]" if variant else "")
        for split, targets in r["metrics"].items():
            for target, values in targets.items():
                for metric, value in values.items():
                    spec = info.get(metric)
                    unit, direction = "", "count"
                    if spec is not None:
                        unit = (TARGET_UNITS.get(target, "") if spec["unit"] == "target"
                                else spec["unit"])
                        direction = spec["direction"]
                    elif metric not in COUNTS:
                        direction = "unknown"
                    rows.append({
                        "dataset": r["dataset"]["key"], "method": r["method"]["key"],
                        "config": config, "variant": variant, "label": label,
                        "train_size": r["train_size"], "seed": r["seed"],
                        "quick": bool(r.get("quick", False)), "split": split, "target": target,
                        "metric": metric, "value": pd.to_numeric(value, errors="coerce"),
                        "unit": unit, "direction": direction,
                        "fit_s": r["timings"]["fit_s"],
                        "predict_s_per_structure": r["timings"]["predict_s_per_structure"],
                        "n_parameters": r.get("n_parameters"), "n_samples": r.get("n_samples"),
                        "device": r.get("device"), **run_facts, "run_id": r["run_id"],
                    })
    frame = pd.DataFrame(rows, columns=TIDY_COLUMNS)
    if frame.empty:
        return frame
    frame["value"] = frame["value"].astype(float)
    return frame.sort_values(
        ["dataset", "method", "config", "train_size", "seed", "split", "target", "metric",
         "run_id"],
        kind="stable",
    ).reset_index(drop=True)


def _run_facts(record: dict) -> dict:
    """Collapse verdict, budget and reproducibility facts of a record (None where an older
    record lacks them)."""
    prov = record.get("provenance") or {}
    budget = record.get("budget") or {}
    steps = budget.get("steps_per_model")
    return {
        "collapsed": (record.get("collapse") or {}).get("collapsed"),
        "steps_per_model": max(steps) if steps else None,
        "threads": record.get("threads", prov.get("threads")),
        "commit": record.get("commit", prov.get("commit")),
        "dirty": record.get("dirty", prov.get("dirty")),
    }


def seed_stats(grouped) -> pd.DataFrame:
    """Mean and standard deviation over seeds that a NaN seed cannot hide: both are NaN when
    any seed is; ``count`` counts seeds and ``n_finite`` the finite ones."""
    import numpy as np

    with np.errstate(invalid="ignore"):  # inf values (a deterministic NLL) give NaN sd
        return grouped.agg(mean=lambda v: v.mean(skipna=False),
                           std=lambda v: v.std(skipna=False), count="size", n_finite="count")


#: What a row of a leaderboard table is: one configuration (a method's ``label`` names it,
#: with what differs from the method's other configurations) at one training size.
ROW_KEYS = ["method", "label", "config", "train_size", "quick"]


def _with_configs(frame: pd.DataFrame) -> pd.DataFrame:
    """A frame made by hand may lack the derived columns: one configuration per method,
    and each metric's direction and unit from its spec."""
    if "label" not in frame:
        frame = frame.assign(label=frame["method"], config="", variant="")
    if "direction" not in frame or "unit" not in frame:
        info = metric_info()
        frame = frame.assign(
            direction=[(info.get(m) or {}).get("direction", "count") for m in frame["metric"]],
            unit=[TARGET_UNITS.get(t, "") if (info.get(m) or {}).get("unit") == "target"
                  else (info.get(m) or {}).get("unit", "")
                  for m, t in zip(frame["metric"], frame["target"], strict=True)])
    return frame


def wide(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and count over seeds, one row per configuration x train size x split x
    target (two configurations of one method are two rows, told apart by ``label``)."""
    frame = _with_configs(frame)
    keys = ROW_KEYS + ["split", "target"]
    stats = seed_stats(frame.groupby(keys + ["metric"], sort=True)["value"])[["mean", "std"]]
    table = stats.unstack("metric")
    table.columns = [f"{metric}_{stat}" for stat, metric in table.columns]
    ordered = sorted(table.columns, key=lambda c: (c.rsplit("_", 1)[0], c.rsplit("_", 1)[1]))
    cost = frame.groupby(keys, sort=True)[["fit_s", "predict_s_per_structure", "n_parameters",
                                            "n_samples"]].mean()
    seeds = frame.groupby(keys, sort=True)["seed"].nunique().rename("n_seeds")
    collapsed = frame.assign(c=frame["collapsed"].fillna(False).astype(bool)).groupby(
        keys, sort=True).apply(lambda g: g.loc[g["c"], "seed"].nunique(),
                               include_groups=False).rename("n_collapsed")
    return pd.concat([seeds, collapsed, table[ordered], cost], axis=1).reset_index()


def markdown(frame: pd.DataFrame, dataset: str) -> str:
    frame = _with_configs(frame)
    lines = [f"# {dataset}", "",
             "Mean ± standard deviation over seeds (n = seeds). Each header gives the better "
             "direction (↓ lower, ↑ higher, →0.95 nearest 0.95) and the unit. "
             "`spearman_robust` uses the sample median and IQR instead of mean and std. "
             "A row marked **COLLAPSED (k)** holds k seeds whose "
             "mean did not beat the constant predictor (see `uqbench.collapse`): they are "
             "averaged in here for the record, and no claim rests on them.", ""]
    sub = frame[frame["metric"].isin(table_metrics(frame))]
    splits = sorted(sub["split"].unique(), key=lambda s: (s != "test", s))  # ID first
    for target in sorted(sub["target"].unique()):
        for split in splits:
            part = sub[(sub["target"] == target) & (sub["split"] == split)]
            if not part.empty:
                lines += _markdown_table(part, target, split)
    return "\n".join(lines)


def table_metrics(frame: pd.DataFrame) -> list[str]:
    """The metrics of a table: the headline ones, then any other scored metric (a
    plugin's) that has a better direction, in name order."""
    present = frame.drop_duplicates("metric").set_index("metric")["direction"]
    head = [m for m in HEADLINE if m in present.index]
    builtin = {m.key for m in BUILTIN}
    return head + sorted(m for m, d in present.items()
                         if m not in builtin and d in ("lower", "higher", "target"))


def _markdown_table(part: pd.DataFrame, target: str, split: str) -> list[str]:
    """One table: a row per configuration x training size, mean ± sd over seeds."""
    lines = [f"## {target} — {split}", ""]
    keys = ["label", "config", "train_size", "quick"]
    agg = seed_stats(part.groupby(keys + ["metric"])["value"]).reset_index()
    flagged = part[part["collapsed"].fillna(False).astype(bool)]
    n_collapsed = flagged.groupby(keys)["seed"].nunique()
    cols = [m for m in table_metrics(part) if m in set(agg["metric"])]
    lines.append("| method | train size | n | " + " | ".join(_header(m, part) for m in cols)
                 + " |")
    lines.append("|---|---:|---:|" + "---:|" * len(cols))
    for (method, config, size, quick), rows in agg.groupby(keys):
        cells = []
        for m in cols:
            row = rows[rows["metric"] == m]
            if row.empty:
                cells.append("")
                continue
            mean, std = row["mean"].iloc[0], row["std"].iloc[0]
            n_bad = int(row["count"].iloc[0] - row["n_finite"].iloc[0])
            cell = f"{mean:.4g}" + ("" if pd.isna(std) else f" ± {std:.2g}")
            cells.append(cell + (f" ({n_bad} NaN)" if n_bad else ""))
        n = int(rows["count"].max())
        label = f"{method} (quick)" if quick else method
        k = int(n_collapsed.get((method, config, size, quick), 0))
        if k:
            label += f" **COLLAPSED ({k})**"
        lines.append(f"| {label} | {size} | {n} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines




def _header(metric: str, part: pd.DataFrame) -> str:
    """A column header with the better direction and the unit, e.g. ``crps ↓ (eV/Å)``."""
    row = part[part["metric"] == metric].iloc[0]
    ideal = ""
    if row["direction"] == "target":
        info = metric_info().get(metric) or {}
        ideal = f"{info['ideal']:g}" if info.get("ideal") is not None else ""
    unit = row["unit"] if isinstance(row["unit"], str) else ""
    return (f"{metric} {ARROWS.get(row['direction'], '')}{ideal}"
            + (f" ({unit})" if unit else ""))
