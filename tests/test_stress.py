"""Stress: BKS labels, reading stress and GAP virials, the strain-derivative stress of a
model, and the stress term of every strategy's loss."""

import json

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.fd import calculate_numerical_stress
from ase.calculators.singlepoint import SinglePointCalculator

from uqbench.backbones.adapter import energy_and_forces, make_adapter
from uqbench.backbones.graph import collate
from uqbench.dataset import full_stress, normalise_labels
from uqbench.datasets.bks import BKSCalculator
from uqbench.datasets.extxyz import read_labelled
from uqbench.datasets.silica_bks import alpha_cristobalite, alpha_quartz
from uqbench.errors import UQBenchError
from uqbench.training import mse_loss, stress_components


def _cells(n: int = 3, stress: bool = True) -> list[Atoms]:
    """Rattled, sheared small silica cells with BKS labels (stress on request)."""
    cells = []
    for k in range(n):
        a = (alpha_quartz if k % 2 == 0 else alpha_cristobalite)(small=True)
        a.set_cell(a.cell.array @ (np.eye(3) + 0.02 * np.array(
            [[k, 1, 0], [1, -k, 0.5], [0, 0.5, 0]])), scale_atoms=True)
        a.rattle(0.05, seed=k)
        a.calc = BKSCalculator()
        a.info["energy"] = a.get_potential_energy()
        a.arrays["forces"] = a.get_forces()
        if stress:
            a.info["stress"] = full_stress(a.get_stress())
        a.calc = None
        cells.append(a)
    return cells


def test_bks_stress_is_the_strain_derivative():
    a = _cells(1, stress=False)[0]
    a.calc = BKSCalculator()
    numerical = calculate_numerical_stress(a, eps=1e-6)
    np.testing.assert_allclose(a.get_stress(), numerical, rtol=1e-6, atol=1e-9)
    assert np.abs(a.get_stress()).max() > 1e-3  # a sheared, rattled cell is under stress


def test_labels_from_calculator_stress_and_gap_virial():
    a = _cells(1, stress=False)[0]
    voigt = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    a.calc = SinglePointCalculator(a, energy=-1.0, forces=np.zeros((len(a), 3)), stress=voigt)
    normalise_labels(a)
    np.testing.assert_array_equal(a.info["stress"], [[1, 6, 5], [6, 2, 4], [5, 4, 3]])
    b = _cells(1, stress=False)[0]
    virial = np.arange(9.0).reshape(3, 3)
    virial = virial + virial.T
    b.info["virial"] = virial
    normalise_labels(b)
    np.testing.assert_allclose(b.info["stress"], -virial / b.get_volume())


def test_extxyz_stress_round_trip_and_checks(tmp_path):
    cells = _cells(2)
    cluster = Atoms("SiO2", positions=[[0, 0, 0], [1.6, 0, 0], [-1.6, 0, 0]])
    cluster.info.update(energy=-1.0, stress=np.ones(6))
    cluster.arrays["forces"] = np.zeros((3, 3))
    path = tmp_path / "s.xyz"
    ase.io.write(path, [*cells, cluster], format="extxyz")
    frames = read_labelled(path)
    for got, want in zip(frames, cells, strict=False):
        np.testing.assert_allclose(got.info["stress"], want.info["stress"], atol=1e-12)
    assert "stress" not in frames[2].info  # no cell, no stress
    bad = cells[0].copy()
    bad.info["stress"] = np.array([1.0, np.nan, 0, 0, 0, 0])
    bad.arrays["forces"] = cells[0].arrays["forces"]
    ase.io.write(tmp_path / "bad.xyz", [bad], format="extxyz")
    with pytest.raises(UQBenchError, match="structure 0 has a non-finite stress"):
        read_labelled(tmp_path / "bad.xyz")
    with pytest.raises(UQBenchError, match="expected 6"):
        full_stress([1.0, 2.0])


def _egnn():
    adapter = make_adapter("egnn", {"hidden": 16, "n_layers": 2, "cutoff": 4.0})
    torch.manual_seed(0)
    return adapter, adapter.build().double()


def test_model_stress_equals_finite_strain_of_its_energy(numerical_stress):
    adapter, model = _egnn()
    cells = _cells(2)
    batch = collate(adapter.graph_items(cells), torch.float64)
    e, f, s = energy_and_forces(model, batch, with_stress=True)
    e0, f0 = energy_and_forces(model, batch)
    torch.testing.assert_close(e, e0, rtol=0, atol=0)
    torch.testing.assert_close(f, f0, rtol=0, atol=0)
    for k, atoms in enumerate(cells):
        num = numerical_stress(
            lambda a: model(collate(adapter.graph_items([a]), torch.float64)).item(), atoms)
        np.testing.assert_allclose(s[k].detach().numpy(), num, rtol=1e-6, atol=1e-10)
        assert np.abs(num).max() > 1e-5
    # Replicas of a structure get the same stress (each its own strain).
    _, _, s2 = energy_and_forces(model, batch.repeat(3), with_stress=True)
    torch.testing.assert_close(s2, s.repeat(3, 1, 1))


def test_stress_components_and_mixed_labels():
    adapter, model = _egnn()
    cells = _cells(3)
    del cells[1].info["stress"]
    batch = collate(adapter.graph_items(cells), torch.float64)
    assert torch.isnan(batch.stress[1]).all() and torch.isfinite(batch.stress[[0, 2]]).all()
    scale = torch.tensor(2.0, dtype=torch.float64)
    pred = torch.zeros(5, 3, 3, 3, dtype=torch.float64)
    p, t = stress_components(pred, batch, scale)
    assert p.shape == (5, 2, 6) and t.shape == (2, 6)
    for row, k in enumerate([0, 2]):
        v = cells[k].get_volume() / len(cells[k]) / 2.0
        xx, yy, zz = (cells[k].info["stress"][i, i] * v for i in range(3))
        sig = cells[k].info["stress"]
        np.testing.assert_allclose(t[row].numpy(), [xx, yy, zz, sig[1, 2] * v, sig[0, 2] * v,
                                                    sig[0, 1] * v])
    # The loss: the stress term is the mean square of those components; weight 0 drops it.
    model.train()
    base = mse_loss(model, batch, 1.0, 0.0)
    with_s = mse_loss(model, batch, 1.0, 3.0)
    _, _, s = energy_and_forces(model, batch, with_stress=True)
    sp, st = stress_components(s, batch, model.energy_scale)
    torch.testing.assert_close(with_s - base, 3.0 * ((sp - st) ** 2).mean())
    no_labels = collate(adapter.graph_items(_cells(3, stress=False)), torch.float64)
    assert no_labels.stress is None
    torch.testing.assert_close(mse_loss(model, no_labels, 1.0, 3.0),
                               mse_loss(model, no_labels, 1.0, 0.0))


@pytest.mark.parametrize("key", ["ensemble-egnn", "p-egnn", "blip-egnn", "mcdropout-egnn"])
def test_every_strategy_trains_on_stress(key):
    """Same seed, stress weight 0 vs 1: the fitted weights differ only if the stress term
    reaches the gradient."""
    import uqbench

    train, val = _cells(4), _cells(2)
    extra = {"n_members": 2} if key.startswith("ensemble") else {"n_samples": 2}
    if key == "p-egnn":
        extra.update(pretrain=False)
    params = {}
    for weight in (0.0, 1.0):
        method = uqbench.create_method(
            key, max_epochs=2, device="cpu", dtype="float64", stress_weight=weight,
            backbone_options={"hidden": 8, "n_layers": 1, "cutoff": 4.0}, **extra)
        method.fit(train, val)
        params[weight] = torch.cat([p.detach().flatten() for p in
                                    method.models_[0].parameters()])
        pred = method.predict_distribution(_cells(2))
        assert np.isfinite(pred.energy_mean).all()
    assert not torch.allclose(params[0.0], params[1.0])


def test_run_ids_of_earlier_records_do_not_change(tmp_path):
    """stress_weight at its default is left out of the run id; another value changes it."""
    from uqbench.results import run_id
    from uqbench.runner import RunConfig, identity, prepare

    cfg = RunConfig(method="egnn", dataset="nbody", out=tmp_path, quick=True)
    method, kwargs = prepare(cfg)
    rid, config = identity(cfg, method, kwargs)
    assert "stress_weight" not in config["params"]
    assert rid == run_id(json.loads(json.dumps(config)))
    cfg2 = RunConfig(method="egnn", dataset="nbody", out=tmp_path, quick=True,
                     params={"stress_weight": 2.0})
    method2, kwargs2 = prepare(cfg2)
    assert identity(cfg2, method2, kwargs2)[0] != rid
