"""Post-hoc recalibration of any method's predictive distribution on the calibration split
(disjoint from the val split that picks the best weights; see
`uqbench.dataset.carve_calibration`).

``scalar`` (Levi et al. 2022; the sigma scaling of Guo et al. 2017 for regression): one
factor per target (energy per atom, force components) multiplies every standard deviation;
it is the minimiser of the Gaussian NLL on the validation split, which has the closed form
s^2 = mean((y - mu)^2 / sigma^2) (for a Student-t prediction, the minimiser of its NLL,
found numerically; the degrees of freedom stay). Samples are stretched about their mean by
the same factor, so sample-based metrics see the same recalibration. The mean never changes.

``isotonic`` (Kuleshov, Fenner & Ermon 2018): per target, the PIT values F(y) of the
validation split under the predicted Gaussian (Student-t where predicted) give a monotone
map R of CDF levels (`uqbench.metrics.level_map.fit_level_map`); the recalibrated
distribution is R o F, scored exactly (PIT, NLL) or by quadrature (CRPS, std). It leaves
every parametric family, so the recalibrated prediction carries the map and the base std
(`Prediction.*_level_map`, ``*_base_std``), its std is R o F's, and it has no samples: a
sample-based method is recalibrated through the Gaussian of its mean and std, the
approximation its calibration metrics already use. The point prediction (mean) stays.

``conformal`` (split-conformal prediction, Vovk et al. 2005; Angelopoulos & Bates 2021):
per target, the nonconformity score of a calibration value is |y - mu| / (q sigma), q the
predicted distribution's own 97.5 % standard quantile (1.96 for a Gaussian, the Student-t's
for its df); the factor is the ceil((n + 1) 0.95)-th smallest of the n scores, and every
std is multiplied by it. The central 95 % interval of the recalibrated distribution is then
mu ± q x factor x sigma, which holds a new exchangeable value with probability >= 0.95
(and < 0.95 + 1 / (n + 1) without ties) whatever the model. For forces the scores are the
pooled components; components of one structure are not exchangeable with each other, so
there the guarantee is approximate. Applied like ``scalar`` (samples stretched about their
mean).
"""

from __future__ import annotations

import numpy as np
from ase import Atoms

from uqbench.errors import UQBenchError
from uqbench.prediction import Prediction

METHODS = ("scalar", "isotonic", "conformal")
#: The central interval whose coverage conformal recalibration guarantees.
CONFORMAL_LEVEL = 0.95


def _fittable(prediction: Prediction, structures: list[Atoms]):
    """Per target name: its `Target` on ``structures`` and the mask of values a fit may use
    (finite mean and std, std > 0), or None where no value may."""
    from uqbench.scoring import targets

    found = targets(prediction, structures)
    for name in ("energy", "forces"):
        t = found.get(name)
        ok = (None if t is None
              else np.isfinite(t.y_pred) & np.isfinite(t.y_std) & (t.y_std > 0))
        yield name, (t, ok) if ok is not None and ok.any() else None


def scalar_factors(prediction: Prediction, structures: list[Atoms]) -> dict[str, float]:
    """Per target, the std factor that minimises the Gaussian NLL of ``structures`` (the
    calibration split); 1 where no label or no positive std allows a fit."""
    factors = {}
    for name, fit in _fittable(prediction, structures):
        if fit is None:
            factors[name] = 1.0
            continue
        t, ok = fit
        z = (t.y_true[ok] - t.y_pred[ok]) / t.y_std[ok]
        factors[name] = float(np.sqrt(np.mean(z**2))) or 1.0
        if t.df is not None and np.any(z != 0):
            factors[name] = _student_t_factor(z, t.df[ok], factors[name])
    return factors


def conformal_factors(prediction: Prediction, structures: list[Atoms],
                      level: float = CONFORMAL_LEVEL) -> dict[str, float]:
    """Per target, the split-conformal std factor at ``level`` (see the module docstring)
    from the calibration split ``structures``; 1 where no label or positive std allows a
    fit, and inf where the split is too small for the level (ceil((n + 1) level) > n)."""
    from uqbench.metrics.functions import standard_quantile

    factors = {}
    for name, fit in _fittable(prediction, structures):
        if fit is None:
            factors[name] = 1.0
            continue
        t, ok = fit
        upper = 0.5 + level / 2
        # the quantile of the unit-std family, as the coverage metric uses: a Student-t's
        # std is its scale x sqrt(df / (df - 2)), so its raw t quantile would shrink the
        # factor by that much (coverage 0.6-0.86 where 0.95 was due)
        q = standard_quantile(np.float64(upper), None if t.df is None else t.df[ok])
        scores = np.sort(np.abs(t.y_true[ok] - t.y_pred[ok]) / (q * t.y_std[ok]))
        n = scores.size
        rank = int(np.ceil((n + 1) * level))
        factors[name] = float(scores[rank - 1]) if rank <= n else float("inf")
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


def isotonic_maps(prediction: Prediction, structures: list[Atoms]) -> dict[str, list]:
    """Per target, the level map (knots [[level, recalibrated level], ...]) fitted on the
    PIT values of ``structures`` (the calibration split); the identity where no label or no
    positive std allows a fit."""
    from uqbench.metrics.level_map import base_cdf, fit_level_map

    maps = {}
    for name, fit in _fittable(prediction, structures):
        if fit is None:
            maps[name] = [[0.0, 0.0], [1.0, 1.0]]
            continue
        t, ok = fit
        z = (t.y_true[ok] - t.y_pred[ok]) / t.y_std[ok]
        levels = base_cdf(z, None if t.df is None else t.df[ok])
        maps[name] = fit_level_map(levels).tolist()
    return maps


def apply_isotonic(prediction: Prediction, maps: dict[str, list]) -> Prediction:
    """``prediction`` as R o F per target: the level maps and base stds set, each std the
    recalibrated distribution's, samples dropped, means kept."""
    from uqbench.metrics.level_map import std_ratio

    fields = {}
    for name in ("energy", "forces"):
        knots = np.asarray(maps.get(name, [[0.0, 0.0], [1.0, 1.0]]), dtype=np.float64)
        std = getattr(prediction, f"{name}_std")
        df = getattr(prediction, f"{name}_df")
        ratio = std_ratio(knots, None if df is None else df.ravel(), std.size)
        ratio = ratio.reshape(std.shape)
        epistemic = getattr(prediction, f"{name}_epistemic_std")
        fields.update({f"{name}_std": std * ratio, f"{name}_base_std": std,
                       f"{name}_level_map": knots, f"{name}_df": df,
                       f"{name}_epistemic_std": None if epistemic is None
                       else epistemic * ratio})
    return Prediction(n_atoms=prediction.n_atoms, energy_mean=prediction.energy_mean,
                      forces_mean=prediction.forces_mean, **fields)


def fit(kind: str, prediction: Prediction, val: list[Atoms] | None) -> dict:
    """The parameters of recalibration ``kind`` fitted on ``val`` (the calibration split):
    std factors per target (scalar, conformal) or level maps per target (isotonic)."""
    if kind not in METHODS:
        raise UQBenchError(f"unknown recalibration {kind!r}; known: {', '.join(METHODS)}")
    if not val:
        raise UQBenchError("recalibration needs a calibration split; this dataset has none")
    if kind == "isotonic":
        return isotonic_maps(prediction, val)
    if kind == "conformal":
        return conformal_factors(prediction, val)
    return scalar_factors(prediction, val)


def apply_kind(kind: str, prediction: Prediction, params: dict) -> Prediction:
    """``prediction`` recalibrated by ``kind`` with the fitted ``params``."""
    return apply_isotonic(prediction, params) if kind == "isotonic" else apply(prediction,
                                                                                 params)


def describe(kind: str, params: dict) -> str:
    """One line for the log: the factors, or each map's recalibrated level at 0.5 and the
    coverage its central 90 % interval would have had."""
    if kind in ("scalar", "conformal"):
        return "std factors " + ", ".join(f"{k} {v:.3g}" for k, v in params.items())
    parts = []
    for name, knots in params.items():
        x, y = np.asarray(knots).T
        width = np.interp(0.95, x, y) - np.interp(0.05, x, y)
        parts.append(f"{name}: the base 90 % interval held {width:.0%} of val")
    return "level maps (" + "; ".join(parts) + ")"
