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

from uqbench.metrics.table import TARGET_UNITS  # noqa: E402
from uqbench.progress import note  # noqa: E402
from uqbench.results import output_path  # noqa: E402


def _label(metric: str) -> str:
    """A metric's label from its spec (plugins' included), else its key."""
    from uqbench.metrics.table import metric_info

    return (metric_info().get(metric) or {}).get("label", metric)


#: Figures are drawn to stay readable at 1200 px: at most this many panels per row.
MAX_COLUMNS = 3
#: Okabe & Ito's colour-blind-safe palette, and a brown for the ninth strategy (black
#: last: the deterministic reference).
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442",
           "#8C564B", "#000000"]
#: One colour per strategy, in this order, everywhere (figures and web pages); unknown
#: strategies (plugins) take the remaining colours by a stable hash of their name.
STRATEGIES = ["p", "blip", "ensemble", "mcdropout", "mve", "evidential", "llpr",
              "shallow-ensemble", "deterministic"]
BACKBONES = ("egnn", "chgnet", "orb")
_MARKERS = {"egnn": "o", "chgnet": "s", "orb": "^"}


def method_parts(method: str) -> tuple[str, str]:
    """(strategy, backbone) of a method key: ``p-egnn`` -> (p, egnn); a bare backbone key
    (``egnn``) is the deterministic strategy; a key without a known backbone is its own
    strategy."""
    method = method.split(" [", 1)[0]  # a configuration's label: "key [what differs]"
    if method in BACKBONES:
        return "deterministic", method
    head, _, tail = method.rpartition("-")
    if head and tail in BACKBONES:
        return head, tail
    return method, ""


def method_colour(method: str) -> str:
    """The colour of ``method``'s strategy: the same in every figure and page."""
    import zlib

    strategy = method_parts(method)[0]
    if strategy in STRATEGIES:
        return PALETTE[STRATEGIES.index(strategy) % len(PALETTE)]
    return PALETTE[zlib.crc32(strategy.encode()) % len(PALETTE)]


def method_marker(method: str) -> str:
    return _MARKERS.get(method_parts(method)[1], "D")


def variant_style(label: str | None) -> str:
    """The line style of a configuration: raw solid, scalar-recalibrated dashed,
    isotonic-recalibrated dotted, conformal dash-dotted (the colour stays the method's)."""
    if label and "recalibrated isotonic" in label:
        return ":"
    if label and "recalibrated conformal" in label:
        return "-."
    if label and "recalibrated" in label:
        return "--"
    return "-"


def _grid(n_panels: int, width: float = 4.6, height: float = 3.6):
    """A figure of ``n_panels`` panels, at most `MAX_COLUMNS` to a row; unused panels are
    hidden. Returns (figure, flat list of the used axes)."""
    ncols = min(MAX_COLUMNS, max(n_panels, 1))
    nrows = -(-max(n_panels, 1) // ncols)
    fig, axes = plt.subplots(nrows, ncols, squeeze=False,
                             figsize=(width * ncols, height * nrows + 0.6))
    flat = [ax for row in axes for ax in row]
    for ax in flat[n_panels:]:
        ax.set_visible(False)
    return fig, flat[:n_panels]


def _quick_mark(quick: bool) -> str:
    return " [QUICK runs: smoke-test budget, not results]" if quick else ""


def metric_vs_train_size(frame: pd.DataFrame, metric: str, split: str, target: str,
                         ax: Axes | None = None) -> Axes:
    """Mean over seeds of ``metric`` against training size, one line per method, with
    error bars of one standard deviation over seeds."""
    ax = ax or plt.gca()
    sub = frame[(frame["metric"] == metric) & (frame["split"] == split)
                & (frame["target"] == target) & ~frame["quick"]]
    hue = "label" if "label" in sub else "method"
    methods = sorted(sub[hue].unique())
    # a recalibrated configuration: its method's colour, dashed (scalar) or dotted
    # (isotonic); (1, 0) is solid (seaborn's "" draws solid lines but dashed legend keys)
    patterns = {"-": (1, 0), "--": (4, 2), ":": (1, 1.5), "-.": (4, 1.5, 1, 1.5)}
    dashes = {m: patterns[variant_style(m)] for m in methods}
    sns.lineplot(data=sub, x="train_size", y="value", hue=hue, style=hue,
                 markers={m: method_marker(m) for m in methods}, dashes=dashes,
                 errorbar="sd", err_style="bars", ax=ax, hue_order=methods,
                 style_order=methods, palette={m: method_colour(m) for m in methods})
    _axis_scale(ax, "x", sub["train_size"])
    units = sub["unit"].dropna().unique() if "unit" in sub else []
    label = _label(metric)
    if len(units) == 1 and units[0]:
        label += f" ({units[0]})"
    ax.set_ylabel(label)
    ax.set_xlabel("training structures")
    if ax.get_legend() is not None:
        ax.get_legend().set_title("method")
    ax.set_title(f"{target} — {split}")
    return ax


def metric_vs_train_size_grid(frame: pd.DataFrame, metric: str, path: Path) -> Path:
    """One panel per split x target (at most three to a row); written to ``path``."""
    targets = sorted(frame["target"].unique())
    cells = [(split, target) for split in _ordered_splits(frame["split"].unique())
             for target in targets]
    fig, axes = _grid(len(cells))
    for ax, (split, target) in zip(axes, cells, strict=True):
        metric_vs_train_size(frame, metric, split, target, ax)
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes:  # one legend for the figure, below the panels, not over the data
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    dataset = frame["dataset"].iloc[0]
    styles = ("; dashed: recalibrated scalar, dotted: isotonic, dash-dot: conformal"
              if any("recalibrated" in str(v) for v in frame.get("label", [])) else "")
    fig.suptitle(f"{dataset}: {_label(metric)} vs training size (mean ± sd over seeds"
                 f"{styles})")
    if handles:
        from matplotlib.lines import Line2D

        # keys drawn here: seaborn's keys show every style dashed
        handles = [Line2D([], [], color=method_colour(label), ls=variant_style(label),
                          marker=method_marker(label)) for label in labels]
        fig.tight_layout(rect=(0, _legend_below(fig, handles, labels), 1, 1))
        return _save(fig, path, layout=False)
    return _save(fig, path)


def _legend_below(fig, handles, labels) -> float:
    """One legend for the figure below its panels, in rows of four, the figure made taller
    to hold it; returns the fraction of the height it takes (for tight_layout's rect)."""
    ncol = min(len(labels), 4)
    rows = -(-len(labels) // ncol)
    width, height = fig.get_size_inches()
    extra = 0.22 * rows + 0.2
    fig.set_size_inches(width, height + extra)
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    return extra / (height + extra)


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
            label=label, color=method_colour(label) if label else None,
            ls=variant_style(label))
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
    ax.plot(rmv, rmse, marker=method_marker(label) if label else "o", label=label,
            color=method_colour(label) if label else None, ls=variant_style(label))
    lo = min(min(rmv), min(rmse))
    hi = max(max(rmv), max(rmse))
    ax.plot([lo, hi], [lo, hi], color="0.6", lw=1, ls="--")
    _axis_scale(ax, "both", np.concatenate([rmv, rmse]))
    ax.set_xlabel(f"root mean variance, RMV {unit}".strip())
    ax.set_ylabel(f"RMSE {unit}".strip())
    return ax


def error_vs_std(curve: dict, unit: str = "", ax: Axes | None = None,
                 label: str | None = None) -> Axes:
    """|error| against predicted std (a strided subsample of the targets), log-log."""
    ax = ax or plt.gca()
    err, std = _finite_pairs(curve["abs_error"], curve["std"])
    if not err.size:
        return _nothing_to_draw(ax)
    ax.scatter(std, err, s=6, alpha=0.5, label=label,
               color=method_colour(label) if label else None)
    positive = [v for v in list(err) + list(std) if v > 0]
    if positive:
        lo, hi = min(positive), max(positive)
        ax.plot([lo, hi], [lo, hi], color="0.6", lw=1, ls="--")
        _axis_scale(ax, "both", np.array(positive))
    ax.set_xlabel(f"predicted std {unit}".strip())
    ax.set_ylabel(f"|error| {unit}".strip())
    return ax


def _save(fig, path: Path, layout: bool = True) -> Path:
    """Lay out, write atomically (temporary file, then rename) and close a figure."""
    if layout:
        fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    note("figure written: %s", path)
    return path


def _axis_scale(ax: Axes, which: str, values) -> None:
    """A log axis where the positive values span at least a decade, else a linear one (a
    log axis over less than a decade shows no labelled tick)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    log = v.size > 1 and v.max() / v.min() >= 10
    for name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
        if which in (name, "both"):
            (ax.set_xscale if name == "x" else ax.set_yscale)("log" if log else "linear")
            if log:  # minor labels collide; majors (decades) are labelled
                axis.set_minor_formatter(NullFormatter())


_PANELS = (("calibration", calibration), ("rmse-vs-rmv", rmse_vs_rmv),
           ("error-vs-std", error_vs_std))
#: The full title of each kind of panel.
TITLES = {
    "calibration": "Calibration: observed vs expected proportion in central intervals",
    "rmse-vs-rmv": "RMSE vs root mean variance (RMV) per bin of predicted std",
    "error-vs-std": "|error| vs predicted std (a strided subsample)",
}


def _ordered_splits(splits) -> list[str]:
    return ["test"] * ("test" in splits) + sorted(s for s in splits if s != "test")


def record_figure(record: dict, path: Path) -> Path:
    """All diagnostic panels of one run: a row per split x target, with its calibration,
    RMSE-vs-RMV and |error|-vs-std panels."""
    curves = record.get("curves") or {}
    rows = [(s, t) for s in _ordered_splits(curves) for t in sorted(curves[s])]
    fig, axes = _grid(3 * len(rows))
    for i, (split, target) in enumerate(rows):
        curve = curves[split][target]
        unit = f"({TARGET_UNITS.get(target, '')})"
        for j, (name, fn) in enumerate(_PANELS):
            ax = axes[3 * i + j]
            if fn is calibration:
                fn(curve, ax=ax)
            elif "abs_error" in curve or fn is rmse_vs_rmv:
                fn(curve, unit=unit, ax=ax)
            ax.set_title(f"{target}, {split}: {name.replace('-', ' ')}", fontsize=9)
    fig.suptitle(f"{record['method']['key']} on {record['dataset']['key']} "
                 f"(train {record['train_size']}, seed {record['seed']})"
                 f"{_quick_mark(bool(record.get('quick')))}")
    return _save(fig, path)


def leaderboard_figures(records: list[dict], out_dir: Path, dataset: str) -> list[Path]:
    """Calibration, RMSE-vs-RMV and |error|-vs-std panels comparing methods, for the
    largest full (non-quick, unless there are only quick runs) training size of
    ``dataset``; the first seed of each method. One figure per kind of panel, a panel per
    split x target, at most three to a row."""
    runs = [r for r in records if r["dataset"]["key"] == dataset and r.get("curves")]
    quick = not any(not r.get("quick") for r in runs)
    if not quick:
        runs = [r for r in runs if not r.get("quick")]  # quick runs only when nothing else
    if not runs:
        return []
    from uqbench.report.tables import variants

    size = max(r["train_size"] for r in runs)
    labels = {rid: v for rid, (_, v) in variants(runs).items()}
    # one record per configuration, labelled as in the tables, grouped by variant: the raw
    # configurations in one figure per panel kind, each recalibration's calibration
    # curves in a figure of their own (at most about eight series per panel)
    by_variant: dict[str, dict[str, dict]] = {}
    for r in sorted(runs, key=lambda r: (r["method"]["key"], r["seed"])):
        if r["train_size"] == size:
            variant = labels[r["run_id"]]
            kind = variant.removeprefix("recalibrated ") if variant not in ("", "raw") \
                else ""
            name = r["method"]["key"] + (f" [{variant}]" if variant else "")
            by_variant.setdefault(kind, {}).setdefault(name, r)
    written = []
    for kind, chosen in sorted(by_variant.items()):
        panels = _PANELS if not kind else [p for p in _PANELS if p[1] is calibration]
        written += _panel_figures(chosen, panels, out_dir, dataset, size, quick, kind)
    return written


def _panel_figures(chosen: dict[str, dict], panels, out_dir: Path, dataset: str, size: int,
                   quick: bool, kind: str) -> list[Path]:
    first = next(iter(chosen.values()))
    cells = [(s, t) for s in _ordered_splits(first["curves"]) for t in
             sorted(first["curves"][s])]
    written = []
    for name, fn in panels:
        fig, axes = _grid(len(cells))
        for (split, target), ax in zip(cells, axes, strict=True):
            for method, rec in chosen.items():
                curve = rec["curves"].get(split, {}).get(target)
                if curve is None or (fn is error_vs_std and "abs_error" not in curve):
                    continue
                if fn is calibration:
                    fn(curve, ax=ax, label=method)
                else:
                    fn(curve, unit=f"({TARGET_UNITS.get(target, '')})", ax=ax, label=method)
            ax.set_title(f"{target}, {split}", fontsize=10)
        handles, labels = axes[0].get_legend_handles_labels()
        bottom = _legend_below(fig, handles, labels) if handles else 0.0
        which = f"recalibrated {kind}" if kind else "raw predictions"
        fig.suptitle(f"{dataset}, train size {size}: {TITLES[name]}, {which}\n(first seed "
                     f"per method){_quick_mark(quick)}", fontsize=11)
        fig.tight_layout(rect=(0, bottom, 1, 1))
        stem = f"{dataset}-{name}" + (f"-{kind}" if kind else "")
        written.append(_save(fig, output_path(out_dir, f"{stem}.png"), layout=False))
    return written


def metric_by_split(frame: pd.DataFrame, metric: str, target: str,
                    ax: Axes | None = None) -> Axes:
    """Bars of ``metric`` per split (ID test first, then OOD), one colour per method,
    mean ± sd over seeds."""
    ax = ax or plt.gca()
    sub = frame[(frame["metric"] == metric) & (frame["target"] == target)]
    order = _ordered_splits(sub["split"].unique())
    hue = "label" if "label" in sub else "method"
    methods = sorted(sub[hue].unique())
    sns.barplot(data=sub, x="split", y="value", hue=hue, order=order,
                hue_order=methods, errorbar="sd", capsize=0.1, ax=ax,
                palette={m: method_colour(m) for m in methods})
    ax.set_ylabel(_label(metric))
    ax.set_xlabel("")
    ax.set_title(target)
    if ax.get_legend() is not None:
        ax.get_legend().set_title("method")
    return ax


def metric_by_split_figure(frame: pd.DataFrame, metric: str, path: Path) -> Path:
    """One panel per target, at the largest training size of the frame."""
    size = frame["train_size"].max()
    sub = frame[frame["train_size"] == size]
    targets = sorted(sub["target"].unique())
    fig, axes = _grid(len(targets), width=6.0, height=4.0)
    for j, (target, ax) in enumerate(zip(targets, axes, strict=True)):
        metric_by_split(sub, metric, target, ax)
        if j and ax.get_legend() is not None:
            ax.get_legend().remove()
    fig.suptitle(f"{sub['dataset'].iloc[0]}, train size {size}: "
                 f"{_label(metric)} by split (mean ± sd over seeds)"
                 f"{_quick_mark(bool(sub['quick'].all()))}")
    return _save(fig, path)
