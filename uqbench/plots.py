"""Figures. Each plot function takes (and returns) a matplotlib ``Axes``."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402

from uqbench.metrics.table import BUILTIN  # noqa: E402

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
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
