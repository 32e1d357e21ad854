"""Your own data: dataset spec files, energy-only splits, dataset options, `datasets check`."""

from __future__ import annotations

import json
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.units import GPa, kcal, mol

import uqbench
from uqbench.backbones.graph import collate, graph_item
from uqbench.cli import main
from uqbench.datasets.spec import load_spec
from uqbench.training import mse_loss


def _frames(n: int, rattle: float, seed: int, energy_only: bool = False,
            strain: float = 0.0) -> list:
    """Small periodic Cu cells labelled by ASE's EMT (fast, no download)."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        atoms = bulk("Cu", "fcc", a=3.6 * (1 + strain * k / max(n - 1, 1)), cubic=True)
        atoms.rattle(rattle, seed=int(rng.integers(1 << 30)))
        atoms.calc = EMT()
        energy, force = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = None
        atoms.info["REF_energy"] = energy
        if not energy_only:
            atoms.arrays["REF_forces"] = force
        out.append(atoms)
    return out


SPEC = """\
name: cu-emt
description: EMT copper, five files as a user keeps them
splits:
  train: train.xyz
  val: 0.2
  test: test.xyz
  ood-hot: hot.xyz
  ood-strain: scan_*.xyz
labels: {energy: REF_energy, forces: REF_forces}
"""


@pytest.fixture
def spec_dir(tmp_path):
    ase.io.write(tmp_path / "train.xyz", _frames(30, 0.05, 0), format="extxyz")
    ase.io.write(tmp_path / "test.xyz", _frames(10, 0.05, 1), format="extxyz")
    ase.io.write(tmp_path / "hot.xyz", _frames(10, 0.15, 2), format="extxyz")
    ase.io.write(tmp_path / "scan_a.xyz", _frames(6, 0.0, 3, energy_only=True, strain=0.05),
                 format="extxyz")
    ase.io.write(tmp_path / "scan_b.xyz", _frames(6, 0.0, 4, energy_only=True, strain=-0.05),
                 format="extxyz")
    (tmp_path / "cu.yaml").write_text(SPEC)
    return tmp_path


def test_spec_reads_five_files_with_energy_only_splits(spec_dir):
    data = load_spec(spec_dir / "cu.yaml", seed=0)
    assert data.key == "cu-emt"
    assert data.sizes() == {"train": 24, "val": 6, "test": 10, "ood-hot": 10,
                            "ood-strain": 12}
    scan = data.splits["ood-strain"]
    assert all("energy" in a.info and "forces" not in a.arrays for a in scan)
    assert all("forces" in a.arrays for a in data.splits["train"])
    # the same structures, in another order, with another seed; train_size cuts train only
    other = load_spec(spec_dir / "cu.yaml", seed=1, train_size=5)
    assert len(other.splits["train"]) == 5 and len(other.splits["val"]) == 6


def test_run_on_spec_scores_energy_only_splits_without_force_metrics(spec_dir, tmp_path,
                                                                     capsys):
    out = tmp_path / "out"
    code = main(["run", "-m", "mcdropout-egnn", "-d", str(spec_dir / "cu.yaml"), "--quick",
                 "-p", "max_steps=4", "-p", "n_samples=3", "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "eV/atom" in text and "crps↓" in text
    (path,) = out.rglob("*.json")
    assert path.parent.parent.name == "cu-emt"  # filed under the spec's name
    assert path.name.startswith("n24-")  # the real training size, not "default"
    record = json.loads(path.read_text())
    metrics = record["metrics"]
    assert set(metrics["ood-strain"]) == {"energy"}
    assert metrics["ood-strain"]["energy"]["n_structures"] == 12
    assert set(metrics["test"]) == {"energy", "forces"}
    assert np.isfinite(metrics["ood-strain"]["energy"]["crps"])
    assert record["dataset"]["labels"]["ood-strain"] == {"energy": 12, "forces": 0,
                                                         "stress": 0}
    assert set(record["reference"]["constant"]["splits"]["ood-strain"]) == {"energy"}


def test_masked_loss_uses_only_labels_present():
    """A batch where one structure lacks forces and another lacks an energy gives the
    loss of the labels present, with finite gradients."""
    frames = _frames(3, 0.05, 5)
    for a in frames:
        a.info["energy"] = a.info.pop("REF_energy")
        a.arrays["forces"] = a.arrays.pop("REF_forces")
    partial = [a.copy() for a in frames]
    del partial[1].arrays["forces"]
    del partial[2].info["energy"]
    model = uqbench.create_method("egnn", backbone_options={"hidden": 8, "n_layers": 1,
                                                            "cutoff": 3.0})
    from uqbench.backbones.egnn import EGNN

    torch.manual_seed(0)
    net = EGNN(hidden=8, n_layers=1, cutoff=3.0).double()
    assert model is not None
    batch = collate([graph_item(a, 3.0) for a in partial], torch.float64)
    assert batch.energy_labelled.tolist() == [True, True, False]
    assert batch.forces_labelled.tolist() == [True] * 4 + [False] * 4 + [True] * 4
    loss = mse_loss(net, batch, force_weight=1.0)
    loss.backward()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert torch.isfinite(loss) and all(torch.isfinite(g).all() for g in grads)
    # the same number by hand: energies of structures 0, 1; forces of atoms of 0 and 2
    full = collate([graph_item(a, 3.0) for a in frames], torch.float64)
    from uqbench.backbones.adapter import energy_and_forces

    e, f = energy_and_forces(net, full, create_graph=False)[:2]
    scale = net.energy_scale
    e_err = ((e - full.energy) / full.n_atoms / scale)[:2]
    f_err = ((f - full.forces) / scale)[torch.tensor([0] * 4 + [1] * 4 + [2] * 4) != 1]
    expected = (e_err**2).mean() + (f_err**2).mean()
    assert torch.allclose(loss.detach(), expected.detach())


def test_units_and_virial_stress_are_converted(tmp_path):
    frames = _frames(8, 0.05, 6)
    for a in frames:  # write the labels in kcal/mol, and a virial in kcal/mol
        e, f = a.info.pop("REF_energy"), a.arrays.pop("REF_forces")
        a.info["E"] = e / (kcal / mol)
        a.arrays["F"] = f / (kcal / mol)
        a.info["W"] = np.eye(3).ravel() / (kcal / mol)
        a.info["S"] = np.full(6, 1.0)  # GPa
    ase.io.write(tmp_path / "d.xyz", frames, format="extxyz")
    (tmp_path / "v.yaml").write_text(
        "name: v\nsplits: {train: d.xyz, test: d.xyz}\n"
        "labels: {energy: E, forces: F, virial: W}\nunits: {energy: kcal/mol}\n")
    (tmp_path / "s.yaml").write_text(
        "name: s\nsplits: {train: d.xyz, test: d.xyz}\n"
        "labels: {energy: E, forces: F, stress: S}\nunits: {energy: kcal/mol, stress: GPa}\n")
    v = load_spec(tmp_path / "v.yaml").splits["test"][0]
    original = _frames(8, 0.05, 6)[0]
    assert np.isclose(v.info["energy"], original.info["REF_energy"])
    assert np.allclose(v.arrays["forces"], original.arrays["REF_forces"])
    assert np.allclose(v.info["stress"], -np.eye(3) / v.get_volume())
    s = load_spec(tmp_path / "s.yaml").splits["test"][0]
    assert np.allclose(s.info["stress"], np.full((3, 3), GPa))


def test_reference_energies_fit_removes_the_per_atom_offset(spec_dir):
    text = SPEC + "reference_energies: fit\n"
    (spec_dir / "fit.yaml").write_text(text)
    data = load_spec(spec_dir / "fit.yaml")
    e = np.array([a.info["energy"] / len(a) for a in data.splits["train"]])
    assert abs(e.mean()) < 1e-6  # one element: the fit takes the mean per atom
    assert data.options["reference_energies"]["Cu"] != 0


@pytest.mark.parametrize("text, message", [
    ("name: x\n", "'splits' must map"),
    ("splits: {train: train.xyz, test: test.xyz}\n", "'name' must be"),
    ("name: x\nsplits: {train: nope.xyz, test: test.xyz}\n", "no file matches 'nope.xyz'"),
    ("name: x\nsplits: {train: train.xyz}\n", "no 'test' split"),
    ("name: x\nsplits: {train: train.xyz, test: test.xyz, holdout: hot.xyz}\n",
     "no split name"),
    ("name: x\nsplits: {train: train.xyz, test: test.xyz, val: 1.5}\n", "fraction"),
    ("name: x\nsplits: {train: train.xyz, test: test.xyz}\nlabels: {stress: S}\n",
     "units.stress is not"),
    ("name: x\nsplits: {train: train.xyz, test: test.xyz}\nunits: {energy: Ha}\n",
     "units.energy 'Ha'"),
    ("name: x\nsplits: {train: train.xyz, test: test.xyz}\ncolour: red\n", "unknown key"),
    ("name: x\nsplits: [train.xyz\n", "not valid YAML"),
])
def test_malformed_spec_one_line_exit_2(spec_dir, text, message, capsys):
    path = spec_dir / "bad.yaml"
    path.write_text(text)
    out = spec_dir / "out"
    assert main(["run", "-m", "egnn", "-d", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("uqbench: error:") and message in err[0], err
    assert not out.exists()


def test_datasets_check_prints_summary_and_problems(spec_dir, capsys):
    code = main(["datasets", "check", str(spec_dir / "cu.yaml")])
    text = capsys.readouterr().out
    assert "ood-strain" in text and "d min" in text and "E/atom min" in text
    assert code == 1  # val is small: flagged as noisy
    problems = text.split("problem(s):")[1]
    assert "'val' has only 6 structures" in problems and "train" not in problems
    # a leak: the test file copied into train is found
    (spec_dir / "leak.yaml").write_text(SPEC.replace("train: train.xyz",
                                                     "train: [train.xyz, test.xyz]"))
    main(["datasets", "check", str(spec_dir / "leak.yaml")])
    assert "of 'test' also appear in 'train'" in capsys.readouterr().out


def test_dataset_options_from_the_cli_are_checked(tmp_path, capsys):
    out = tmp_path / "o"
    for option, message in (("colour=red", "takes no option 'colour'"),
                            ("test_size=many", "test_size must be an integer"),
                            ("train_size=5", "with --train-size")):
        code = main(["run", "-m", "egnn", "-d", "nbody", "-o", option, "--out", str(out)])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and message in err[0], err
    assert not out.exists()


def test_sweep_file_dataset_options_reach_the_loader_and_are_checked(tmp_path, capsys):
    from uqbench.sweep import expand, load_sweep

    good = tmp_path / "good.yaml"
    good.write_text("methods: [egnn]\ndatasets: [nbody]\n"
                    "dataset_options: {nbody: {test_size: 7}}\n")
    [cfg] = expand(load_sweep(good), tmp_path / "out")
    assert cfg.dataset_options == {"test_size": 7}
    for text, message in (("dataset_options: {silica: {x: 1}}", "not in 'datasets'"),
                          ("dataset_options: [1]", "must map a dataset"),
                          ("dataset_options: {nbody: {colour: red}}",
                           "takes no option 'colour'")):
        bad = tmp_path / "bad.yaml"
        bad.write_text(f"methods: [egnn]\ndatasets: [nbody]\n{text}\n")
        code = main(["sweep", str(bad), "--out", str(tmp_path / "o"), "--serial"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and message in err[0], err


def test_min_distance_of_a_molecule_is_the_closest_pair():
    from ase import Atoms
    from scipy.spatial.distance import pdist

    from uqbench.datasets.check import SEARCH, min_distance

    rng = np.random.default_rng(3)
    for n in (2, 5, 9):
        atoms = Atoms("H" * n, positions=rng.normal(size=(n, 3)), cell=[50, 50, 50],
                      pbc=False)
        closest = pdist(atoms.positions).min()
        expected = closest if closest <= SEARCH else np.inf
        assert min_distance(atoms) == pytest.approx(expected)
    far = Atoms("H2", positions=[[0, 0, 0], [0, 0, SEARCH + 1]])
    assert min_distance(far) == np.inf and min_distance(Atoms("H")) == np.inf


ETHANOL = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "botnet-ethanol"


@pytest.mark.skipif(not ETHANOL.is_dir(), reason="the shared BOTNet ethanol copy")
def test_own_data_as_kept_isolated_atoms_selection_and_quick(tmp_path):
    """The BOTNet ethanol files as a user keeps them: reference energies from
    isolated_atoms.xyz, the methanol frames selected by their config_type, --quick small."""
    spec = tmp_path / "ethanol.yaml"
    spec.write_text(f"""name: ethanol
splits:
  train: {ETHANOL}/train.xyz
  val: 0.1
  test: {ETHANOL}/test_MD.xyz
  ood-methanol: {{files: {ETHANOL}/test_eth_meth.xyz, select: {{config_type: methanol}}}}
reference_energies: {ETHANOL}/isolated_atoms.xyz
""")
    data = load_spec(spec)
    methanol = data.splits["ood-methanol"]
    assert len(methanol) == 145 and all(len(a) == 6 for a in methanol)
    refs = data.options["reference_energies"]
    isolated = {a.get_chemical_symbols()[0]: a.get_potential_energy()
                for a in ase.io.read(ETHANOL / "isolated_atoms.xyz", ":")}
    assert refs == pytest.approx(isolated)
    raw = ase.io.read(ETHANOL / "test_MD.xyz", "0")
    first = data.splits["test"][0]
    expected = raw.get_potential_energy() - sum(isolated[s] for s in raw.get_chemical_symbols())
    assert first.info["energy"] == pytest.approx(expected)  # an atomisation energy, eV
    quick = load_spec(spec, quick=True)
    assert {k: len(v) for k, v in quick.splits.items()} == {
        "train": 64, "val": 16, "test": 32, "ood-methanol": 32}
    assert all(len(a) == 6 for a in quick.splits["ood-methanol"])
