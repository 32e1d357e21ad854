"""The BKS silica ground truth and the silica-bks dataset."""

import numpy as np
import pytest
from ase import units
from ase.md.velocitydistribution import Stationary
from ase.md.verlet import VelocityVerlet
from ase.neighborlist import neighbor_list

import uqbench
from uqbench.datasets.bks import BKS, CHARGES, BKSCalculator, pair_energy_derivative
from uqbench.datasets.silica_bks import alpha_cristobalite, alpha_quartz, thermalize
from uqbench.neighbours import periodic_pairs


def _fd_check(atoms, picks, h=1e-5, tol=1e-5):
    atoms.calc = BKSCalculator()
    forces = atoms.get_forces()
    for i, k in picks:
        e = []
        for sign in (1, -1):
            b = atoms.copy()
            b.positions[i, k] += sign * h
            b.calc = BKSCalculator()
            e.append(b.get_potential_energy())
        assert forces[i, k] == pytest.approx(-(e[0] - e[1]) / (2 * h), abs=tol)


def test_forces_match_finite_differences():
    q = alpha_quartz()
    q.rattle(0.08, seed=1)
    _fd_check(q, [(0, 0), (7, 2), (50, 1)])
    c = alpha_cristobalite()
    c.set_cell(c.cell * 0.93, scale_atoms=True)
    c.rattle(0.08, seed=2)
    _fd_check(c, [(3, 1), (30, 0)])


def test_periodic_pairs_equal_ase_neighbour_list():
    a = alpha_cristobalite()
    a.rattle(0.3, seed=3)
    a.positions += np.array([7.0, -12.0, 3.0])  # unwrapped positions
    for cutoff in (3.0, 11.0):
        i, j, s = periodic_pairs(a.positions, a.cell.array, cutoff)
        i2, j2, s2 = neighbor_list("ijS", a, cutoff)
        assert set(zip(i, j, map(tuple, s), strict=True)) == set(
            zip(i2, j2, map(tuple, s2), strict=True))


def test_repulsion_prevents_si_o_collapse():
    from uqbench.datasets.bks import _pair_table

    r = np.linspace(0.6, 1.6, 201)
    plain = _pair_table(False)[(14, 8)]
    corrected = _pair_table(True)[(14, 8)]
    v_plain, _ = pair_energy_derivative(r, *plain)
    v_corr, dv_corr = pair_energy_derivative(r, *corrected)
    assert v_plain[r <= 1.0].min() < v_plain[-1]  # plain BKS: the Si-O pair collapses
    assert np.all(dv_corr[r < 1.3] < 0)  # corrected: repulsive all the way in
    assert v_corr[0] > v_corr[-1] + 100


@pytest.mark.parametrize("name", ["quartz", "cristobalite", "quartz-dense-rattled"])
def test_forces_agree_with_matscipy_ewald(name):
    pytest.importorskip("matscipy")
    from ase.calculators.mixing import SumCalculator
    from matscipy.calculators.ewald import Ewald
    from matscipy.calculators.pair_potential.calculator import (
        BeestKramerSanten,
        PairPotential,
    )

    atoms = alpha_cristobalite() if name == "cristobalite" else alpha_quartz()
    if "dense" in name:
        atoms.set_cell(atoms.cell * 0.93, scale_atoms=True)
        atoms.rattle(0.1, seed=4)
    assert np.count_nonzero(atoms.cell.array - np.diag(np.diag(atoms.cell.array))) == 0
    ref = atoms.copy()
    ref.set_array("charge", np.array([CHARGES[z] for z in ref.numbers], dtype=float))
    ewald = Ewald()
    kc, lengths = 3.6, np.diag(ref.cell.array)
    ewald.set(cutoff=10.0, accuracy=1e-6, verbose=False, kspace={
        "alpha": 0.45, "nbk_c": [int(np.ceil(kc * n / (2 * np.pi))) for n in lengths],
        "cutoff": kc})
    pair = PairPotential({key: BeestKramerSanten(*BKS[key], 10.0) for key in BKS})
    ref.calc = SumCalculator([pair, ewald])
    atoms.calc = BKSCalculator(repulsion=False)
    f, f_ref = atoms.get_forces(), ref.get_forces()
    rel = np.sqrt(((f - f_ref) ** 2).mean() / (f_ref**2).mean())
    assert rel < 0.05, rel
    assert np.abs(f - f_ref).max() < 0.3
    e, e_ref = atoms.get_potential_energy(), ref.get_potential_energy()
    assert abs(e - e_ref) / len(atoms) < 0.2


def test_nve_energy_drift_is_bounded():
    atoms = alpha_quartz()
    atoms.calc = BKSCalculator()
    thermalize(atoms, 1500, rng=np.random.default_rng(0))
    Stationary(atoms)
    dyn = VelocityVerlet(atoms, timestep=1.0 * units.fs)
    totals = []
    dyn.attach(lambda: totals.append(atoms.get_total_energy()), interval=10)
    dyn.run(300)
    drift = (max(totals) - min(totals)) / len(atoms)
    assert drift < 2e-3, drift  # eV/atom over 300 fs at 1500 K


@pytest.fixture(scope="module")
def tiny_silica():
    return uqbench.load_dataset("silica-bks", train_size=10, val_size=10, test_size=10,
                                ood_size=10, melt_steps=100, quench_steps=200)


def test_splits_labels_and_hot_distances(tiny_silica):
    assert tiny_silica.sizes() == {"train": 10, "val": 10, "test": 10, "ood-hot": 10,
                                   "ood-dense": 10, "ood-defect": 10}
    assert tiny_silica.test_splits == ["test", "ood-defect", "ood-dense", "ood-hot"]
    frame = tiny_silica.splits["train"][3]
    check = frame.copy()
    check.calc = BKSCalculator()
    assert check.get_potential_energy() == pytest.approx(frame.info["energy"], abs=1e-8)
    np.testing.assert_allclose(check.get_forces(), frame.arrays["forces"], atol=1e-8)
    for atoms in tiny_silica.splits["ood-hot"]:
        i, j, d = neighbor_list("ijd", atoms, 1.5)
        si_o = (atoms.numbers[i] == 14) & (atoms.numbers[j] == 8)
        assert d[si_o].min() > 1.2
    for atoms in tiny_silica.splits["ood-defect"]:
        assert (atoms.numbers == 14).sum() * 2 == (atoms.numbers == 8).sum()
        assert len(atoms) in (69, 45)
    dense = tiny_silica.splits["ood-dense"][0]
    assert dense.get_volume() == pytest.approx(alpha_quartz().get_volume() * 0.8, rel=1e-9)


def test_silica_splits_are_whole_md_runs_labelled_by_phase(tiny_silica):
    seen: dict[str, str] = {}
    for name, frames in tiny_silica.splits.items():
        for atoms in frames:  # the labels survive the cache (this fixture may come from it)
            assert {"trajectory", "phase", "temperature"} <= set(atoms.info)
            assert seen.setdefault(atoms.info["trajectory"], name) == name
    assert {a.info["phase"] for a in tiny_silica.splits["ood-hot"]} == {"liquid"}


def test_silica_is_deterministic(tiny_silica, tmp_path, monkeypatch):
    """Regenerated without the cache, serially (the fixture ran one process per core)."""
    monkeypatch.setenv("UQBENCH_CACHE", str(tmp_path))
    again = uqbench.load_dataset("silica-bks", train_size=10, val_size=10, test_size=10,
                                 ood_size=10, melt_steps=100, quench_steps=200, n_jobs=1)
    for split in ("train", "ood-hot"):
        for a, b in zip(tiny_silica.splits[split], again.splits[split], strict=True):
            np.testing.assert_allclose(a.positions, b.positions, atol=1e-10)


def test_every_egnn_method_runs_on_silica(tiny_silica):
    for key in ("p-egnn", "blip-egnn", "ensemble-egnn", "mcdropout-egnn"):
        extra = {"n_members": 2} if key.startswith("ensemble") else {"n_samples": 3}
        method = uqbench.create_method(key, max_epochs=1, device="cpu",
                                       backbone_options={"hidden": 8, "n_layers": 1}, **extra)
        method.fit(tiny_silica.splits["train"], tiny_silica.splits["val"])
        assert method.backbone_options_["cutoff"] == 5.0
        pred = method.predict_distribution(tiny_silica.splits["ood-hot"][:3])
        assert np.isfinite(pred.forces_samples).all()


def test_silica_bks_small_cells():
    data = uqbench.load_dataset("silica-bks-small", train_size=30, val_size=10, test_size=10,
                                ood_size=10, melt_steps=50, quench_steps=100)
    assert data.key == "silica-bks-small"
    assert sorted({len(a) for a in data.splits["train"]}) == [9, 12, 18]
    assert {len(a) for a in data.splits["ood-defect"]} <= {6, 15}
    assert {len(a) for a in data.splits["ood-hot"]} == {18}
    for atoms in data.splits["ood-defect"]:
        assert (atoms.numbers == 14).sum() * 2 == (atoms.numbers == 8).sum()


def test_generation_works_from_a_script_without_a_main_guard(tmp_path):
    """spawn would re-run an unguarded script in every worker (BrokenProcessPool)."""
    import subprocess
    import sys

    script = tmp_path / "plain.py"
    script.write_text(
        "import uqbench\n"
        "ds = uqbench.load_dataset('silica-bks-small', train_size=10, val_size=10,\n"
        "                          test_size=10, ood_size=10, melt_steps=20, quench_steps=40,\n"
        "                          use_cache=False, n_jobs=2)\n"
        "print(sum(ds.sizes().values()))\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=3600)  # a hang guard only
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "60"
