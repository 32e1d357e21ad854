"""Scoring: from a `Prediction` and labelled structures to metrics per split x target.

What is scored:
- ``energy``: energy per atom of each structure (eV/atom): y = E / n_atoms, and the same
  division for the mean, std and samples;
- ``forces``: every force component (eV/Å) for distribution metrics (CRPS, NLL,
  calibration, coverage, sharpness, RMSE, MAE); for the rank metric (Spearman) each atom's
  force vector: |error| = |F_pred - F_true| and std = sqrt(sum of the three component
  variances);
- OOD detection ranks structures by their uncertainty: the std of the structure's *total*
  energy (eV; a per-atom std would shrink with the atom count under independent per-atom
  noise and so mark larger structures as more familiar), or the mean per-atom force std.
Each target is scored on the structures that carry its label (``n_structures`` of them,
``n_targets`` values); a split without any label of a target has no metrics for it.
Non-finite predictions are counted per target (``n_nonfinite``) and make the metrics NaN;
zero stds are counted too (``n_zero_std``): they make the NLL infinite.
"""

from __future__ import annotations

import warnings

import numpy as np
from ase import Atoms
from scipy.stats import ConstantInputWarning

from uqbench.dataset import energies, forces, label_counts, n_atoms
from uqbench.metrics.functions import calibration_curve, rmse_rmv_curve, tail_ratio
from uqbench.metrics.table import TARGET_UNITS, MetricSpec, Target
from uqbench.prediction import Prediction

ERROR_STD_POINTS = 400


def label_masks(structures: list[Atoms]) -> tuple[np.ndarray, np.ndarray]:
    """Which structures have an energy label and which atoms a force label."""
    return (np.isfinite(energies(structures)),
            np.isfinite(forces(structures)).all(axis=1))


def targets(prediction: Prediction, structures: list[Atoms]) -> dict[str, Target]:
    """The scored quantities of one split (see the module docstring), each over the
    structures (energy) or atoms (forces) that carry its label; a target no structure of
    the split has a label for is left out. The per-structure OOD scores cover every
    structure: they need no label."""
    counts = n_atoms(structures)
    if not np.array_equal(counts, prediction.n_atoms):
        raise ValueError("prediction does not match the structures (atom counts differ)")
    e_ok, a_ok = label_masks(structures)
    out: dict[str, Target] = {}
    if e_ok.any():
        e_true = (energies(structures) / counts)[e_ok]
        e_pred = (prediction.energy_mean / counts)[e_ok]
        e_std = (prediction.energy_std / counts)[e_ok]
        e_samples = None
        if prediction.energy_samples is not None:
            e_samples = (prediction.energy_samples / counts[None, :])[:, e_ok]
        e_df = None if prediction.energy_df is None else prediction.energy_df[e_ok]
        e_base = (None if prediction.energy_base_std is None
                  else (prediction.energy_base_std / counts)[e_ok])
        # OOD score: total-energy std / sqrt(n) stays flat in n for independent per-atom
        # noise (the total std grows as sqrt(n), the per-atom one shrinks as 1/sqrt(n)),
        # so it does not detect a split by its atom count alone.
        out["energy"] = Target("energy", TARGET_UNITS["energy"], e_true, e_pred, e_std, e_samples,
                               np.abs(e_pred - e_true), e_std,
                               prediction.energy_std / np.sqrt(counts),
                               df=e_df, level_map=prediction.energy_level_map,
                               base_std=e_base, n_atoms=counts,
                               structure=np.flatnonzero(e_ok))
    if a_ok.any():
        f_true = forces(structures)[a_ok]
        f_mean = prediction.forces_mean[a_ok]
        f_std = prediction.forces_std[a_ok]
        f_atom_std_all = np.sqrt(np.sum(prediction.forces_std**2, axis=1))
        structure_idx = np.repeat(np.arange(len(counts)), counts)
        f_struct = np.bincount(structure_idx, weights=f_atom_std_all,
                               minlength=len(counts)) / counts
        f_samples = None
        if prediction.forces_samples is not None:
            f_samples = prediction.forces_samples[:, a_ok].reshape(
                prediction.forces_samples.shape[0], -1)
        out["forces"] = Target("forces", TARGET_UNITS["forces"], f_true.ravel(), f_mean.ravel(),
                               f_std.ravel(), f_samples,
                               np.linalg.norm(f_mean - f_true, axis=1),
                               f_atom_std_all[a_ok], f_struct, vector_size=3,
                               df=None if prediction.forces_df is None
                               else prediction.forces_df[a_ok].ravel(),
                               level_map=prediction.forces_level_map,
                               base_std=None if prediction.forces_base_std is None
                               else prediction.forces_base_std[a_ok].ravel(),
                               n_atoms=counts,
                               structure=np.repeat(structure_idx[a_ok], 3))
    return out


def _nonfinite(t: Target) -> int:
    bad = ~np.isfinite(t.y_pred) | ~np.isfinite(t.y_std)
    if t.samples is not None:
        bad |= ~np.isfinite(t.samples).all(axis=0)
    return int(bad.sum())


def score(
    predictions: dict[str, Prediction],
    splits: dict[str, list[Atoms]],
    metrics: list[MetricSpec],
    id_split: str = "test",
    errors: dict[str, str] | None = None,
) -> tuple[dict, dict]:
    """Metrics ``{split: {target: {metric: value}}}`` and curves for plots, per split. A
    metric whose computation raises is NaN there, and its first error goes into
    ``errors`` (metric -> message) when given: one broken metric loses only itself."""
    # A deterministic model's zero stds and constant inputs make numpy and scipy warn on
    # every run; they are expected, counted (n_zero_std) and show as inf or NaN metrics.
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)
        results, curves = _score(predictions, splits, metrics, id_split)
    found = results.pop("_errors", {})
    if errors is not None:
        errors.update(found)
    return results, curves


def _score(predictions: dict[str, Prediction], splits: dict[str, list[Atoms]],
           metrics: list[MetricSpec], id_split: str) -> tuple[dict, dict]:
    per_split = {name: targets(pred, splits[name]) for name, pred in predictions.items()}
    results: dict = {}
    curves: dict = {}
    for split, tgts in per_split.items():
        results[split] = {}
        curves[split] = {}
        for tname, t in tgts.items():
            row: dict[str, float] = {"n_structures": label_counts(splits[split])[tname],
                                     "n_targets": int(t.y_true.size),
                                     "n_nonfinite": _nonfinite(t),
                                     "n_zero_std": int(np.sum(t.y_std == 0))}
            for spec in metrics:
                if spec.ood and (split == id_split or tname not in per_split.get(id_split, {})):
                    continue
                args = (per_split[id_split][tname], t) if spec.ood else (t,)
                try:
                    row[spec.key] = float(spec.compute(*args))
                except Exception as exc:  # a broken (plugin) metric loses itself only
                    row[spec.key] = float("nan")
                    errors = results.setdefault("_errors", {})
                    errors.setdefault(spec.key, f"{type(exc).__name__}: {exc}".splitlines()[0])
            results[split][tname] = row
            expected, observed = calibration_curve(t.y_true, t.y_pred, t.y_std, n_levels=21,
                                                   df=t.df, level_map=t.level_map,
                                                   base_std=t.base_std)
            rmv, rmse_b = rmse_rmv_curve(t.y_true, t.y_pred, t.y_std)
            # An evenly strided subsample of (|error|, std) for error-vs-uncertainty plots.
            pick = np.unique(np.linspace(0, t.rank_error.size - 1, ERROR_STD_POINTS).astype(int))
            curves[split][tname] = {
                "expected_proportion": expected.tolist(),
                "observed_proportion": observed.tolist(),
                "rmv": rmv.tolist(),
                "rmse": rmse_b.tolist(),
                "abs_error": t.rank_error[pick].tolist(),
                "std": t.rank_std[pick].tolist(),
            }
    return results, curves


def tail_summary(predictions: dict[str, Prediction], splits: dict[str, list[Atoms]]) -> dict:
    """How far the furthest samples lie, per split x target (sample-based predictions with
    at least 3 samples; others get None): over all targets (energies per atom, force
    components), the median, 99th percentile and maximum of max|sample - median| / IQR,
    the largest |sample - median| in the target's unit, and the fraction of targets whose
    ratio exceeds 10 (a Gaussian's 32 samples rarely pass 2.5)."""
    out: dict = {}
    for split, pred in predictions.items():
        out[split] = {}
        for name, t in targets(pred, splits[split]).items():
            if t.samples is None or t.samples.shape[0] < 3:
                out[split][name] = None
                continue
            ratio = tail_ratio(t.samples)
            far = np.abs(t.samples - np.median(t.samples, axis=0)).max(axis=0)
            finite = ratio[np.isfinite(ratio)]
            out[split][name] = {
                "ratio_median": float(np.median(finite)) if finite.size else None,
                "ratio_p99": float(np.percentile(finite, 99)) if finite.size else None,
                "ratio_max": float(ratio.max()) if ratio.size else None,
                "max_distance": float(far.max()) if far.size else None,
                "fraction_over_10": float(np.mean(ratio > 10)) if ratio.size else None,
            }
    return out


def variance_parts(predictions: dict[str, Prediction], splits: dict[str, list[Atoms]],
                   id_split: str = "test") -> dict | None:
    """Where a method separates the epistemic part of its variance (evidential regression),
    per split x target: the epistemic fraction of the mean predicted variance, Spearman of
    |error| with the epistemic std alone, and (OOD splits) the ROC-AUC of OOD detection by
    the epistemic std of the total energy / sqrt(atoms) (energy; size-fair, as
    ``ood_auroc``) or the mean per-atom epistemic force std (forces). None for methods
    that do not separate it."""
    from uqbench.metrics import functions as F

    if all(p.energy_epistemic_std is None for p in predictions.values()):
        return None
    scores: dict = {}
    out: dict = {}
    for split, pred in predictions.items():
        if pred.energy_epistemic_std is None:
            continue
        e_ok, a_ok = label_masks(splits[split])
        counts = pred.n_atoms
        f_atom = np.sqrt(np.sum(pred.forces_epistemic_std**2, axis=1))
        f_struct = np.bincount(pred.structure_index, weights=f_atom,
                               minlength=len(counts)) / counts
        scores[split] = {"energy": pred.energy_epistemic_std / np.sqrt(counts),
                         "forces": f_struct}
        out[split] = {}
        for name, t in targets(pred, splits[split]).items():
            if name == "energy":
                epi = (pred.energy_epistemic_std / counts)[e_ok]
                rank_epi = epi
            else:
                epi = pred.forces_epistemic_std[a_ok].ravel()
                rank_epi = f_atom[a_ok]
            with np.errstate(divide="ignore", invalid="ignore"):
                fraction = float(np.mean(epi**2) / np.mean(t.y_std**2))
            out[split][name] = {
                "epistemic_fraction": fraction,
                "spearman_epistemic": F.spearman_abs_error_std(
                    np.zeros_like(t.rank_error), t.rank_error, rank_epi)}
    for split in out:
        if split == id_split or id_split not in scores:
            continue
        for name in out[split]:
            out[split][name]["ood_auroc_epistemic"] = F.ood_auroc(
                scores[id_split][name], scores[split][name])
    return out


#: Info keys that name the family of a structure, in order of preference.
GROUP_KEYS = ("phase", "config_type")


def group_scores(predictions: dict[str, Prediction], splits: dict[str, list[Atoms]]) -> dict:
    """Spearman(|error|, std) and its robust twin within each family of structures
    (``atoms.info["phase"]``, else ``config_type``), per split x target, beside the pooled
    value: a pooled ranking over several phases or cell sizes can follow the family rather
    than the uncertainty. Beside them each family's mean |error| and mean std (what a
    between-family confound is made of). Splits without such a label are left out."""
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)  # as in `score`
        return _group_scores(predictions, splits)


def _group_scores(predictions: dict[str, Prediction], splits: dict[str, list[Atoms]]) -> dict:
    from uqbench.metrics.table import SPEARMAN, SPEARMAN_ROBUST

    out: dict = {}
    for split, pred in predictions.items():
        structures = splits[split]
        key = next((k for k in GROUP_KEYS if all(k in a.info for a in structures)), None)
        if key is None:
            continue
        labels = np.array([str(a.info[key]) for a in structures])
        if len(set(labels)) < 2:
            continue
        out[split] = {"key": key}
        e_ok, a_ok = label_masks(structures)
        atom_labels = np.repeat(labels, pred.n_atoms)[a_ok]
        for name, t in targets(pred, structures).items():
            per = atom_labels if name == "forces" else labels[e_ok]
            values_per = np.repeat(per, 3) if name == "forces" else per
            groups = {}
            for g in sorted(set(per)):
                sub = _subset(t, per == g, values_per == g)
                groups[g] = {"n": int(np.sum(per == g)), "spearman": SPEARMAN.compute(sub),
                             "spearman_robust": SPEARMAN_ROBUST.compute(sub),
                             "mean_abs_error": float(np.mean(sub.rank_error)),
                             "mean_std": float(np.mean(sub.rank_std))}
            out[split][name] = groups
    return out


def _subset(t: Target, rank_mask: np.ndarray, value_mask: np.ndarray) -> Target:
    return Target(t.name, t.unit, t.y_true[value_mask], t.y_pred[value_mask],
                  t.y_std[value_mask], None if t.samples is None else t.samples[:, value_mask],
                  t.rank_error[rank_mask], t.rank_std[rank_mask], t.structure_score,
                  t.vector_size, None if t.df is None else t.df[value_mask],
                  t.level_map, None if t.base_std is None else t.base_std[value_mask])
