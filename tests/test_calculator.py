"""The ASE calculator: means, uncertainties, samples, and a short Langevin MD."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase import units
from ase.md.langevin import Langevin

import uqbench

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def method(tiny_nbody):
    m = uqbench.create_method("mcdropout-egnn", max_epochs=2, n_samples=5, device="cpu",
                              backbone_options={"hidden": 16, "n_layers": 1})
    return m.fit(tiny_nbody.splits["train"], tiny_nbody.splits["val"])


def test_results(method, tiny_nbody):
    atoms = tiny_nbody.splits["test"][0].copy()
    atoms.calc = uqbench.UQCalculator(method)
    energy = atoms.get_potential_energy()
    res = atoms.calc.results
    assert res["energy_samples"].shape == (5,)
    assert res["forces_samples"].shape == (5, len(atoms), 3)
    assert energy == pytest.approx(res["energy_samples"].mean())
    np.testing.assert_allclose(atoms.get_forces(), res["forces_samples"].mean(0))
    assert res["energy_std"] == pytest.approx(res["energy_samples"].std(ddof=1))
    per_atom = np.sqrt((res["forces_samples"].std(0, ddof=1) ** 2).sum(1))
    np.testing.assert_allclose(atoms.calc.get_property("forces_std"), per_atom)


def test_langevin_md_runs(method, tiny_nbody):
    atoms = tiny_nbody.splits["test"][1].copy()
    atoms.set_masses(np.ones(len(atoms)))
    atoms.calc = uqbench.UQCalculator(method)
    start = atoms.positions.copy()
    dyn = Langevin(atoms, timestep=1.0 * units.fs, temperature_K=300, friction=0.02,
                   fixcm=False, rng=np.random.default_rng(0))
    sigmas = []
    dyn.attach(lambda: sigmas.append(atoms.calc.results["forces_std"].max()), interval=1)
    dyn.run(10)
    assert len(sigmas) == 11 and all(np.isfinite(sigmas))
    assert not np.allclose(atoms.positions, start)


def test_readme_example_runs_as_written():
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "md_with_uncertainty.py")],
                          capture_output=True, text=True, cwd=ROOT, timeout=3600)  # hang guard
    assert proc.returncode == 0, proc.stderr
    assert "energy" in proc.stdout and ("stopped at step" in proc.stdout
                                        or "ran 200 steps" in proc.stdout)
