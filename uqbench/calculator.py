"""`UQCalculator`: an ASE calculator that returns a fitted method's mean and uncertainty."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from uqbench.method import UQMethod


class UQCalculator(Calculator):
    """Mean energy and forces of a fitted UQ method, with their spread, for ASE.

    ``results``: ``energy`` (eV) and ``forces`` (eV/Å) are the predictive means;
    ``energy_std`` (eV) and ``forces_std`` (per atom: sqrt of the summed component variances,
    eV/Å) the uncertainties; ``energy_samples`` [S] and ``forces_samples`` [S, n_atoms, 3]
    the samples when the method draws them. Each MD step costs one `predict_distribution`.
    """

    implemented_properties = ["energy", "forces", "energy_std", "forces_std",
                              "free_energy"]

    def __init__(self, method: UQMethod, n_samples: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.method = method
        self.n_samples = n_samples

    def calculate(self, atoms: Atoms | None = None, properties=None,
                  system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        structure = self.atoms.copy()
        structure.calc = None
        pred = self.method.predict_distribution([structure], self.n_samples)
        self.results = {
            "energy": float(pred.energy_mean[0]),
            "free_energy": float(pred.energy_mean[0]),
            "forces": pred.forces_mean.copy(),
            "energy_std": float(pred.energy_std[0]),
            "forces_std": np.sqrt((pred.forces_std**2).sum(axis=1)),
        }
        if pred.energy_samples is not None:
            self.results["energy_samples"] = pred.energy_samples[:, 0].copy()
            self.results["forces_samples"] = pred.forces_samples.copy()
