"""Metrics for predictive distributions: pure functions plus one table of names/directions."""

from uqbench.metrics.functions import (
    calibration_curve,
    coverage,
    crps_ensemble,
    crps_gaussian,
    ence,
    mae,
    miscalibration_area,
    nll_gaussian,
    ood_auroc,
    rmse,
    rmse_rmv_curve,
    robust_location_spread,
    sharpness,
    spearman_abs_error_std,
)
from uqbench.metrics.table import BUILTIN, MetricSpec, Target

__all__ = [
    "BUILTIN",
    "MetricSpec",
    "Target",
    "calibration_curve",
    "coverage",
    "crps_ensemble",
    "crps_gaussian",
    "ence",
    "mae",
    "miscalibration_area",
    "nll_gaussian",
    "ood_auroc",
    "rmse",
    "rmse_rmv_curve",
    "robust_location_spread",
    "sharpness",
    "spearman_abs_error_std",
]
