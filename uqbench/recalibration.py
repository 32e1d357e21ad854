"""Post-hoc recalibration of any method's predictive distribution on the validation split.

``scalar`` (Levi et al. 2022; the sigma scaling of Guo et al. 2017 for regression): one
factor per target (energy per atom, force components) multiplies every standard deviation;
it is the minimiser of the Gaussian NLL on the validation split, which has the closed form
s^2 = mean((y - mu)^2 / sigma^2) (for a Student-t prediction, the minimiser of its NLL,
found numerically; the degrees of freedom stay). Samples are stretched about their mean by the same
factor, so sample-based metrics see the same recalibration. The mean never changes.

Isotonic recalibration (Kuleshov et al. 2018) maps predicted CDF levels and so leaves the
Gaussian family; it is not offered yet.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms

from uqbench.errors import UQBenchError
from uqbench.prediction import Prediction

METHODS = ("scalar",)


def scalar_factors(prediction: Prediction, structures: list[Atoms]) -> dict[str, float]:
    """Per target, the std factor that minimises the Gaussian NLL of ``structures`` (the
    validation split); 1 where no label or no positive std allows a fit."""
    from uqbench.scoring import targets

    found = targets(prediction, structures)
    factors = {}
    for name in ("energy", "forces"):
        t = found.get(name)
        if t is None:
            factors[name] = 1.0
            continue
        ok = np.isfinite(t.y_pred) & np.isfinite(t.y_std) & (t.y_std > 0)
        if not ok.any():
            factors[name] = 1.0
            continue
        z = (t.y_true[ok] - t.y_pred[ok]) / t.y_std[ok]
        factors[name] = float(np.sqrt(np.mean(z**2))) or 1.0
        if t.df is not None and np.any(z != 0):
            factors[name] = _student_t_factor(z, t.df[ok], factors[name])
    return factors


def _student_t_factor(z: np.ndarray, df: np.ndarray, start: float) -> float:
    """The std factor minimising the Student-t NLL of standardised residuals ``z``."""
    from scipy.optimize import minimize_scalar

    from uqbench.metrics.functions import nll_student_t

    zero = np.zeros_like(z)
    found = minimize_scalar(lambda log_s: nll_student_t(z, zero, np.full_like(z, np.exp(log_s)),
                                                        df),
                            bracket=(np.log(start) - 1.0, np.log(start) + 1.0))
    return float(np.exp(found.x))


def apply(prediction: Prediction, factors: dict[str, float]) -> Prediction:
    """``prediction`` with every std (and each sample's deviation from the mean) of a target
    multiplied by its factor."""
    s_e, s_f = factors.get("energy", 1.0), factors.get("forces", 1.0)
    e_samples = f_samples = None
    if prediction.energy_samples is not None:
        e_samples = prediction.energy_mean + s_e * (prediction.energy_samples
                                                    - prediction.energy_mean)
        f_samples = prediction.forces_mean + s_f * (prediction.forces_samples
                                                    - prediction.forces_mean)
    def scaled(x, s):
        return None if x is None else s * x

    return Prediction(n_atoms=prediction.n_atoms, energy_mean=prediction.energy_mean,
                      energy_std=s_e * prediction.energy_std,
                      forces_mean=prediction.forces_mean,
                      forces_std=s_f * prediction.forces_std,
                      energy_samples=e_samples, forces_samples=f_samples,
                      energy_df=prediction.energy_df, forces_df=prediction.forces_df,
                      energy_epistemic_std=scaled(prediction.energy_epistemic_std, s_e),
                      forces_epistemic_std=scaled(prediction.forces_epistemic_std, s_f))


def fit(kind: str, prediction: Prediction, val: list[Atoms] | None) -> dict[str, float]:
    """The factors of recalibration ``kind`` fitted on the validation split."""
    if kind not in METHODS:
        raise UQBenchError(f"unknown recalibration {kind!r}; known: {', '.join(METHODS)}")
    if not val:
        raise UQBenchError("recalibration needs a validation split; this dataset has none")
    return scalar_factors(prediction, val)
