"""Langevin MD with an uncertainty-aware potential that stops when the model is unsure.

Run: python examples/md_with_uncertainty.py
Fits a small deep ensemble on the N-body data (about 10 s on 2 cores), then runs Langevin
dynamics from a test configuration with `uqbench.UQCalculator`. After every step it reads
the largest per-atom force uncertainty and stops the trajectory once it passes a threshold,
the usual trigger for sending a configuration to the reference method in active learning.
"""

import numpy as np
from ase import units
from ase.md.langevin import Langevin

import uqbench

THRESHOLD = 0.2  # eV/Å: largest per-atom force std tolerated

data = uqbench.load_dataset("nbody", train_size=200, quick=True)
method = uqbench.create_method("ensemble-egnn", n_members=3, max_epochs=15, device="cpu",
                               backbone_options={"hidden": 32, "n_layers": 2})
method.fit(data.splits["train"], data.splits["val"])

atoms = data.splits["test"][0].copy()
atoms.calc = uqbench.UQCalculator(method)
atoms.set_masses(np.ones(len(atoms)))
dyn = Langevin(atoms, timestep=1.0 * units.fs, temperature_K=300, friction=0.02,
               fixcm=False, rng=np.random.default_rng(0))

for step in range(1, 201):
    dyn.run(1)
    sigma = atoms.calc.results["forces_std"].max()
    if sigma > THRESHOLD:
        print(f"stopped at step {step}: largest force std {sigma:.3f} eV/Å > {THRESHOLD} eV/Å "
              "(send this configuration to the reference method)")
        break
else:
    print(f"ran 200 steps; the largest force std stayed below {THRESHOLD} eV/Å")
print(f"energy {atoms.get_potential_energy():.4f} eV ± "
      f"{atoms.calc.results['energy_std']:.4f} eV")
