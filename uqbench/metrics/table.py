"""The metric table: each metric's key, label, unit, direction, and how the scorer calls it.

Registered through the ``uqbench.metrics`` entry-point group, like a plugin's metrics. A
metric's ``compute`` receives a `Target` (one split x target of a prediction); OOD metrics
receive the ID test target and the OOD target.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from uqbench.metrics import functions as F
from uqbench.metrics import level_map as LM


@dataclass(frozen=True)
class Target:
    """What is scored for one target of one split.

    ``y_true``/``y_pred``/``y_std`` are the scored values (energy per atom per structure, or
    force components); ``samples`` has the sample axis first, or is None. ``rank_error`` and
    ``rank_std`` are what rank metrics use (per-atom force vector norms for forces), and
    ``structure_score`` is the per-structure uncertainty used for OOD detection.
    """

    name: str
    unit: str
    y_true: np.ndarray
    y_pred: np.ndarray
    y_std: np.ndarray
    samples: np.ndarray | None
    rank_error: np.ndarray
    rank_std: np.ndarray
    structure_score: np.ndarray
    vector_size: int = 1  # rank metrics group this many consecutive values (3: force vectors)
    df: np.ndarray | None = None  # Student-t degrees of freedom per value (else Gaussian)
    level_map: np.ndarray | None = None  # isotonic recalibration: G = R o F (see level_map)
    base_std: np.ndarray | None = None  # F's std where there is a level map
    n_atoms: np.ndarray | None = None  # atoms of each structure of the split (all of them)
    #: For each scored value, the index (in the split) of the structure it belongs to: one
    #: per energy, three per atom's force (its components), so a metric can group by
    #: structure (e.g. a per-structure force error).
    structure: np.ndarray | None = None


#: The unit of each scored target: energy per atom of a structure, force components. The
#: one home of these labels (tables, figures, web pages and the run's table read it here).
TARGET_UNITS = {"energy": "eV/atom", "forces": "eV/Å"}
#: The arrow that marks a metric's better direction, and the words for it.
ARROWS = {"lower": "↓", "higher": "↑", "target": "→"}
DIRECTION_WORDS = {"lower": "lower is better", "higher": "higher is better",
                   "target": "nearest its ideal",
                   "reference": "the trivial reference, the same for every method"}


@dataclass(frozen=True)
class MetricSpec:
    key: str
    label: str
    unit: str  # "target" = the unit of the scored quantity; "" = dimensionless
    direction: str  # "lower", "higher", or "target"
    compute: Callable[..., float]
    ideal: float | None = None  # for direction "target"
    ood: bool = False  # compute(id_target, ood_target) when True
    summary: str = ""
    #: The values the metric can take (None: unbounded); a record holding a value outside
    #: them is invalid and skipped when read.
    bounds: tuple[float | None, float | None] = (None, None)


def _crps(t: Target) -> float:
    if t.samples is not None:
        # One sample (a deterministic model): the standard estimator, i.e. the MAE.
        return F.crps_ensemble(t.y_true, t.samples, fair=t.samples.shape[0] >= 2)
    if t.level_map is not None:
        return LM.crps(t.y_true, t.y_pred, t.base_std, t.level_map, t.df)
    if t.df is not None:
        return F.crps_student_t(t.y_true, t.y_pred, t.y_std, t.df)
    return F.crps_gaussian(t.y_true, t.y_pred, t.y_std)


def _nll(t: Target) -> float:
    if t.level_map is not None:
        return LM.nll(t.y_true, t.y_pred, t.base_std, t.level_map, t.df)
    if t.df is not None:
        return F.nll_student_t(t.y_true, t.y_pred, t.y_std, t.df)
    return F.nll_gaussian(t.y_true, t.y_pred, t.y_std)


CRPS = MetricSpec(
    "crps", "CRPS", "target", "lower", _crps,
    summary="Fair ensemble CRPS from samples (standard for S = 1), else the closed form of "
            "the predicted Gaussian or Student-t (an isotonically recalibrated one by "
            "quadrature over its quantiles)",
    bounds=(0.0, None),
)
NLL = MetricSpec(
    "nll", "NLL", "nats", "lower", _nll,
    summary="Negative log-likelihood under a Gaussian with the predicted mean and std (the "
            "Student-t or isotonically recalibrated distribution where predicted)",
)
SPEARMAN = MetricSpec(
    "spearman", "Spearman(|error|, std)", "", "higher",
    lambda t: F.spearman_abs_error_std(np.zeros_like(t.rank_error), t.rank_error, t.rank_std),
    summary="Rank correlation of |error| and predicted std (force vectors per atom)",
    bounds=(-1.0, 1.0),
)
def _spearman_robust(t: Target) -> float:
    """Spearman of |median - truth| and IQR / 1.349, from samples (NaN without >= 3)."""
    if t.samples is None or t.samples.shape[0] < 3:
        return float("nan")
    loc, spread = F.robust_location_spread(t.samples)
    k = t.vector_size
    err = np.linalg.norm((loc - t.y_true).reshape(-1, k), axis=1)
    spread = np.sqrt((spread.reshape(-1, k) ** 2).sum(axis=1))
    return F.spearman_abs_error_std(np.zeros_like(err), err, spread)


SPEARMAN_ROBUST = MetricSpec(
    "spearman_robust", "Spearman(|error|, IQR) of median and IQR", "", "higher",
    _spearman_robust,
    summary="Spearman with the sample median and IQR/1.349 instead of mean and std: "
            "what is left when far samples cannot drive it (sample-based methods)",
    bounds=(-1.0, 1.0),
)
MISCALIBRATION_AREA = MetricSpec(
    "miscalibration_area", "Miscalibration area", "", "lower",
    lambda t: F.miscalibration_area(t.y_true, t.y_pred, t.y_std, df=t.df,
                                    level_map=t.level_map, base_std=t.base_std),
    summary="Area between the calibration curve of central intervals of the predicted "
            "Gaussian (Student-t, isotonically recalibrated distribution where predicted) "
            "and the diagonal",
    bounds=(0.0, 1.0),
)
ENCE = MetricSpec(
    "ence", "ENCE", "", "lower", lambda t: F.ence(t.y_true, t.y_pred, t.y_std),
    summary="Expected normalised calibration error, 10 equal-count bins of std",
    bounds=(0.0, None),
)
COVERAGE_95 = MetricSpec(
    "coverage_95", "Coverage (95 %)", "", "target",
    lambda t: F.coverage(t.y_true, t.y_pred, t.y_std, level=0.95, df=t.df,
                         level_map=t.level_map, base_std=t.base_std), ideal=0.95,
    summary="Fraction inside the central 95 % interval of the predicted Gaussian (Student-t, "
            "isotonically recalibrated distribution where predicted); ideal 0.95",
    bounds=(0.0, 1.0),
)
SHARPNESS = MetricSpec(
    "sharpness", "Sharpness", "target", "lower", lambda t: F.sharpness(t.y_std),
    summary="Root mean predicted variance",
    bounds=(0.0, None),
)
RMSE = MetricSpec(
    "rmse", "RMSE", "target", "lower", lambda t: F.rmse(t.y_true, t.y_pred),
    summary="Root mean squared error of the predicted mean",
    bounds=(0.0, None),
)
MAE = MetricSpec(
    "mae", "MAE", "target", "lower", lambda t: F.mae(t.y_true, t.y_pred),
    summary="Mean absolute error of the predicted mean",
    bounds=(0.0, None),
)
OOD_AUROC = MetricSpec(
    "ood_auroc", "OOD ROC-AUC", "", "higher",
    lambda t_id, t_ood: F.ood_auroc(t_id.structure_score, t_ood.structure_score), ood=True,
    summary="ROC-AUC of telling this OOD split from the ID test split by a per-structure "
            "uncertainty that does not grow with the atom count under independent per-atom "
            "noise: the total-energy std / sqrt(atoms) (energy), the mean per-atom force "
            "std (forces). Read it beside ood_auroc_size_only",
    bounds=(0.0, 1.0),
)


def _size_only_auroc(t_id: Target, t_ood: Target) -> float:
    if t_id.n_atoms is None or t_ood.n_atoms is None:
        return float("nan")
    return F.ood_auroc(t_id.n_atoms.astype(float), t_ood.n_atoms.astype(float))


OOD_AUROC_SIZE_ONLY = MetricSpec(
    "ood_auroc_size_only", "Size-only OOD ROC-AUC (reference)", "", "reference",
    _size_only_auroc, ood=True,
    summary="The trivial reference of ood_auroc: the ROC-AUC of a detector that only counts "
            "atoms (more atoms = more OOD; a detector of fewer atoms scores 1 minus this). "
            "The same for every method; an OOD claim needs ood_auroc above it",
    bounds=(0.0, 1.0),
)

BUILTIN = (CRPS, NLL, SPEARMAN, SPEARMAN_ROBUST, MISCALIBRATION_AREA, ENCE, COVERAGE_95,
           SHARPNESS, RMSE, MAE, OOD_AUROC, OOD_AUROC_SIZE_ONLY)


def spec_info(spec: MetricSpec) -> dict:
    """What a record keeps of a metric's spec, so its unit and direction travel with its
    values (a plugin metric stays readable where the plugin is not installed)."""
    return {"label": spec.label, "unit": spec.unit, "direction": spec.direction,
            "ideal": spec.ideal, "summary": spec.summary, "bounds": list(spec.bounds)}


def metric_info() -> dict[str, dict]:
    """Label, unit, direction, ideal and bounds of every registered metric (plugins
    included)."""
    from uqbench import registry

    out = {m.key: m for m in BUILTIN}
    for key, entry in registry.entries("metric").items():
        if entry.error is None and isinstance(entry.obj, MetricSpec):
            out[key] = entry.obj
    return {k: spec_info(m) for k, m in out.items()}
