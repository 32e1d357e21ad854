"""Figures. Each plot function takes (and returns) a matplotlib ``Axes``."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

from uqbench.metrics.table import BUILTIN  # noqa: E402
from uqbench.progress import note  # noqa: E402

_LABELS = {m.key: m.label for m in BUILTIN}
_UNITS = {"energy": "eV/atom", "forces": "eV/Å"}


def metric_vs_train_size(frame: pd.DataFrame, metric: str, split: str, target: str,
                         ax: Axes | None = None) -> Axes:
    """Mean over seeds of ``metric`` against training size, one line per method, with
    error bars of one standard deviation over seeds."""
    ax = ax or plt.gca()
    sub = frame[(frame["metric"] == metric) & (frame["split"] == split)
                & (frame["target"] == target) & ~frame["quick"]]
    sns.lineplot(data=sub, x="train_size", y="value", hue="method", style="method",
                 markers=True, dashes=False, errorbar="sd", err_style="bars", ax=ax,
                 hue_order=sorted(sub["method"].unique()),
                 style_order=sorted(sub["method"].unique()))
    ax.set_xscale("log")
    unit = _UNITS.get(target, "")
    label = _LABELS.get(metric, metric)
    spec = next((m for m in BUILTIN if m.key == metric), None)
    if spec is not None and spec.unit == "target":
        label += f" ({unit})"
    ax.set_ylabel(label)
    ax.set_xlabel("training structures")
    ax.set_title(f"{target} — {split}")
    return ax


def metric_vs_train_size_grid(frame: pd.DataFrame, metric: str, path: Path) -> Path:
    """One panel per target x split; written to ``path``."""
    targets = sorted(frame["target"].unique())
    splits = ["test"] + sorted(s for s in frame["split"].unique() if s != "test")
    fig, axes = plt.subplots(len(targets), len(splits), squeeze=False,
                             figsize=(4.2 * len(splits), 3.4 * len(targets)))
    for i, target in enumerate(targets):
        for j, split in enumerate(splits):
            ax = metric_vs_train_size(frame, metric, split, target, axes[i][j])
            if (i, j) != (0, 0) and ax.get_legend() is not None:
                ax.get_legend().remove()
    dataset = frame["dataset"].iloc[0]
    fig.suptitle(f"{dataset}: {_LABELS.get(metric, metric)} vs training size "
                 "(mean ± sd over seeds)")
    return _save(fig, path)


def _finite_pairs(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def _nothing_to_draw(ax: Axes) -> Axes:
    ax.text(0.5, 0.5, "no finite values\n(NaN predictions)", ha="center", va="center",
            transform=ax.transAxes, color="0.4")
    return ax


def calibration(curve: dict, ax: Axes | None = None, label: str | None = None) -> Axes:
    """Observed vs expected proportion in centred intervals; the diagonal is perfect."""
    ax = ax or plt.gca()
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--")
    if not _finite_pairs(curve["expected_proportion"], curve["observed_proportion"])[0].size:
        return _nothing_to_draw(ax)
    ax.plot(curve["expected_proportion"], curve["observed_proportion"], marker=".",
            label=label)
    ax.set_xlabel("expected proportion in interval")
    ax.set_ylabel("observed proportion")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    return ax


def rmse_vs_rmv(curve: dict, unit: str = "", ax: Axes | None = None,
                label: str | None = None) -> Axes:
    """Error-based calibration: RMSE against RMV per bin of predicted std, with y = x."""
    ax = ax or plt.gca()
    rmv, rmse = _finite_pairs(curve["rmv"], curve["rmse"])
    if not rmv.size:
        return _nothing_to_draw(ax)
    ax.plot(rmv, rmse, marker="o", label=label)
    lo = min(min(rmv), min(rmse))
    hi = max(max(rmv), max(rmse))
    if lo > 0:
        _loglog(ax)
    ax.plot([lo, hi], [lo, hi], color="0.6", lw=1, ls="--")
    ax.set_xlabel(f"RMV {unit}".strip())
    ax.set_ylabel(f"RMSE {unit}".strip())
    return ax


def error_vs_std(curve: dict, unit: str = "", ax: Axes | None = None,
                 label: str | None = None) -> Axes:
    """|error| against predicted std (a strided subsample of the targets), log-log."""
    ax = ax or plt.gca()
    err, std = _finite_pairs(curve["abs_error"], curve["std"])
    if not err.size:
        return _nothing_to_draw(ax)
    ax.scatter(std, err, s=6, alpha=0.5, label=label)
    positive = [v for v in list(err) + list(std) if v > 0]
    if positive:
        lo, hi = min(positive), max(positive)
        ax.plot([lo, hi], [lo, hi], color="0.6", lw=1, ls="--")
        _loglog(ax)
    ax.set_xlabel(f"predicted std {unit}".strip())
    ax.set_ylabel(f"|error| {unit}".strip())
    return ax


def _save(fig, path: Path) -> Path:
    """Lay out, write atomically (temporary file, then rename) and close a figure."""
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    note("figure written: %s", path)
    return path


def _loglog(ax: Axes) -> None:
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):  # minor labels collide on narrow log ranges
        axis.set_minor_formatter(NullFormatter())


_PANELS = (("calibration", calibration), ("rmse-vs-rmv", rmse_vs_rmv),
           ("error-vs-std", error_vs_std))


def _ordered_splits(splits) -> list[str]:
    return ["test"] * ("test" in splits) + sorted(s for s in splits if s != "test")


def record_figure(record: dict, path: Path) -> Path:
    """All diagnostic panels of one run: rows calibration, RMSE vs RMV, |error| vs std;
    one column per split x target."""
    curves = record.get("curves") or {}
    cols = [(s, t) for s in _ordered_splits(curves) for t in sorted(curves[s])]
    fig, axes = plt.subplots(3, len(cols), squeeze=False, figsize=(3.6 * len(cols), 10))
    for j, (split, target) in enumerate(cols):
        curve = curves[split][target]
        for i, (_, fn) in enumerate(_PANELS):
            ax = axes[i][j]
            if fn is calibration:
                fn(curve, ax=ax)
            elif "abs_error" in curve or fn is rmse_vs_rmv:
                fn(curve, unit=f"({_UNITS.get(target, '')})", ax=ax)
            ax.set_title(f"{target} — {split}", fontsize=9)
    fig.suptitle(f"{record['method']['key']} on {record['dataset']['key']} "
                 f"(train {record['train_size']}, seed {record['seed']})")
    return _save(fig, path)


def leaderboard_figures(records: list[dict], out_dir: Path, dataset: str) -> list[Path]:
    """Calibration, RMSE-vs-RMV and |error|-vs-std panels comparing methods, for the
    largest full (non-quick, unless there are only quick runs) training size of
    ``dataset``; the first seed of each method."""
    runs = [r for r in records if r["dataset"]["key"] == dataset and r.get("curves")]
    if any(not r.get("quick") for r in runs):
        runs = [r for r in runs if not r.get("quick")]  # quick runs only when nothing else
    if not runs:
        return []
    size = max(r["train_size"] for r in runs)
    chosen: dict[str, dict] = {}
    for r in sorted(runs, key=lambda r: (r["method"]["key"], r["seed"])):
        if r["train_size"] == size:
            chosen.setdefault(r["method"]["key"], r)
    first = next(iter(chosen.values()))
    cols = [(s, t) for s in _ordered_splits(first["curves"]) for t in
            sorted(first["curves"][s])]
    written = []
    for name, fn in _PANELS:
        fig, axes = plt.subplots(1, len(cols), squeeze=False, figsize=(3.8 * len(cols), 3.8))
        for j, (split, target) in enumerate(cols):
            ax = axes[0][j]
            for method, rec in chosen.items():
                curve = rec["curves"].get(split, {}).get(target)
                if curve is None or (fn is error_vs_std and "abs_error" not in curve):
                    continue
                if fn is calibration:
                    fn(curve, ax=ax, label=method)
                else:
                    fn(curve, unit=f"({_UNITS.get(target, '')})", ax=ax, label=method)
            ax.set_title(f"{target} — {split}", fontsize=9)
        axes[0][0].legend(fontsize=7)
        fig.suptitle(f"{dataset}, train size {size}: {name.replace('-', ' ')} "
                     "(first seed per method)")
        written.append(_save(fig, out_dir / f"{dataset}-{name}.png"))
    return written


def metric_by_split(frame: pd.DataFrame, metric: str, target: str,
                    ax: Axes | None = None) -> Axes:
    """Bars of ``metric`` per split (ID test first, then OOD), one colour per method,
    mean ± sd over seeds."""
    ax = ax or plt.gca()
    sub = frame[(frame["metric"] == metric) & (frame["target"] == target)]
    order = _ordered_splits(sub["split"].unique())
    sns.barplot(data=sub, x="split", y="value", hue="method", order=order,
                hue_order=sorted(sub["method"].unique()), errorbar="sd", capsize=0.1, ax=ax)
    ax.set_ylabel(_LABELS.get(metric, metric))
    ax.set_xlabel("")
    ax.set_title(target)
    return ax


def metric_by_split_figure(frame: pd.DataFrame, metric: str, path: Path) -> Path:
    """One panel per target, at the largest training size of the frame."""
    size = frame["train_size"].max()
    sub = frame[frame["train_size"] == size]
    targets = sorted(sub["target"].unique())
    fig, axes = plt.subplots(1, len(targets), squeeze=False, figsize=(6.5 * len(targets), 4))
    for j, target in enumerate(targets):
        ax = metric_by_split(sub, metric, target, axes[0][j])
        if j and ax.get_legend() is not None:
            ax.get_legend().remove()
    fig.suptitle(f"{sub['dataset'].iloc[0]}, train size {size}: "
                 f"{_LABELS.get(metric, metric)} by split (mean ± sd over seeds)")
    return _save(fig, path)
