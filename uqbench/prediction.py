"""`Prediction`: the predictive distribution of energies and forces, whatever made it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Prediction:
    """Per-structure energies (eV) and per-atom forces (eV/Å) as a distribution.

    Sample-based methods fill ``energy_samples`` ``[S, n_structures]`` and ``forces_samples``
    ``[S, n_atoms_total, 3]`` (sample axis first; sample ``s`` is one whole potential).
    Parametric methods give only means and standard deviations: a Gaussian per value, or,
    where ``energy_df``/``forces_df`` (degrees of freedom, > 2, shaped like the stds) are
    given, a Student-t with that mean, std and df (evidential regression's predictive).
    ``energy_epistemic_std``/``forces_epistemic_std`` (optional, <= the std) give the
    epistemic part of the variance where a method separates it. After isotonic
    recalibration a target carries a ``*_level_map`` (knots [K, 2] of a monotone map R of
    CDF levels, `uqbench.metrics.level_map`) and its ``*_base_std``: its distribution is
    then R o F, F the Gaussian (or Student-t) of the mean and the base std, and ``*_std``
    is that distribution's std; the mean stays the point prediction.
    Mean and std are always present: `from_samples` derives them.
    """

    n_atoms: np.ndarray
    energy_mean: np.ndarray
    energy_std: np.ndarray
    forces_mean: np.ndarray
    forces_std: np.ndarray
    energy_samples: np.ndarray | None = None
    forces_samples: np.ndarray | None = None
    energy_df: np.ndarray | None = None
    forces_df: np.ndarray | None = None
    energy_epistemic_std: np.ndarray | None = None
    forces_epistemic_std: np.ndarray | None = None
    energy_level_map: np.ndarray | None = None
    forces_level_map: np.ndarray | None = None
    energy_base_std: np.ndarray | None = None
    forces_base_std: np.ndarray | None = None

    def __post_init__(self) -> None:
        n_struct = len(self.n_atoms)
        n_tot = int(np.sum(self.n_atoms))
        _check_shape("energy_mean", self.energy_mean, (n_struct,))
        _check_shape("energy_std", self.energy_std, (n_struct,))
        _check_shape("forces_mean", self.forces_mean, (n_tot, 3))
        _check_shape("forces_std", self.forces_std, (n_tot, 3))
        if (self.energy_samples is None) != (self.forces_samples is None):
            raise ValueError("energy_samples and forces_samples come together")
        for name in ("energy", "forces"):
            mean, std = getattr(self, f"{name}_mean"), getattr(self, f"{name}_std")
            if np.any(std < 0):
                raise ValueError(f"Prediction.{name}_std has negative entries")
            if np.any(~np.isfinite(std) & np.isfinite(mean)):
                raise ValueError(f"Prediction.{name}_std is not finite where the mean is "
                                 "(a non-finite prediction must make the mean non-finite too)")
        for name in ("energy", "forces"):
            std = getattr(self, f"{name}_std")
            df = getattr(self, f"{name}_df")
            if df is not None:
                _check_shape(f"{name}_df", df, np.shape(std))
                if np.any(~(np.asarray(df) > 2.0)):
                    raise ValueError(f"Prediction.{name}_df must be > 2 everywhere (a "
                                     "Student-t with a finite std)")
            epistemic = getattr(self, f"{name}_epistemic_std")
            if epistemic is not None:
                _check_shape(f"{name}_epistemic_std", epistemic, np.shape(std))
                # (float32 predictions: allow rounding above the total std)
                if np.any(epistemic < 0) or np.any(epistemic > std * (1 + 1e-6)):
                    raise ValueError(f"Prediction.{name}_epistemic_std must lie in [0, std]")
            level_map = getattr(self, f"{name}_level_map")
            base_std = getattr(self, f"{name}_base_std")
            if (level_map is None) != (base_std is None):
                raise ValueError(f"Prediction.{name}_level_map and {name}_base_std come "
                                 "together")
            if level_map is not None:
                from uqbench.metrics.level_map import check_level_map

                check_level_map(level_map)
                _check_shape(f"{name}_base_std", base_std, np.shape(std))
                if self.energy_samples is not None:
                    raise ValueError("a recalibrated level map describes a parametric "
                                     "prediction: it has no samples")
        if self.energy_samples is not None:
            s = self.energy_samples.shape[0]
            _check_shape("energy_samples", self.energy_samples, (s, n_struct))
            _check_shape("forces_samples", self.forces_samples, (s, n_tot, 3))

    @classmethod
    def from_samples(
        cls, energy: np.ndarray, forces: np.ndarray, n_atoms: np.ndarray
    ) -> Prediction:
        """Build from samples ``energy [S, n_structures]`` and ``forces [S, n_atoms, 3]``."""
        energy = np.asarray(energy, dtype=np.float64)
        forces = np.asarray(forces, dtype=np.float64)
        ddof = 1 if energy.shape[0] > 1 else 0
        return cls(
            n_atoms=np.asarray(n_atoms, dtype=np.int64),
            energy_mean=energy.mean(0),
            energy_std=energy.std(0, ddof=ddof),
            forces_mean=forces.mean(0),
            forces_std=forces.std(0, ddof=ddof),
            energy_samples=energy,
            forces_samples=forces,
        )

    @property
    def n_samples(self) -> int | None:
        return None if self.energy_samples is None else int(self.energy_samples.shape[0])

    @property
    def structure_index(self) -> np.ndarray:
        """For each atom, the index of its structure."""
        return np.repeat(np.arange(len(self.n_atoms)), self.n_atoms)


def _check_shape(name: str, arr: np.ndarray | None, shape: tuple[int, ...]) -> None:
    if arr is None or tuple(np.shape(arr)) != shape:
        got = None if arr is None else tuple(np.shape(arr))
        raise ValueError(f"Prediction.{name} has shape {got}, expected {shape}")
