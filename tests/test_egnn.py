"""EGNN physics: invariant energy, equivariant forces = -grad E, periodic images."""

import numpy as np
import pytest
import torch
from ase import Atoms
from scipy.spatial.transform import Rotation

from uqbench.backbones.adapter import energy_and_forces
from uqbench.backbones.egnn import EGNN
from uqbench.backbones.graph import collate, graph_item


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = EGNN(hidden=16, n_layers=2, n_rbf=8, r_max=5.0).double().eval()
    return m


def _atoms(seed=0, n=6):
    rng = np.random.default_rng(seed)
    a = Atoms(numbers=rng.integers(1, 9, n), positions=rng.normal(size=(n, 3)) * 1.5)
    a.set_initial_charges(rng.choice([-1.0, 1.0], n))
    return a


def _ef(model, atoms, cutoff=None):
    batch = collate([graph_item(atoms, cutoff)], torch.float64)
    e, f = energy_and_forces(model, batch)
    return e.item(), f.detach().numpy()


def test_invariance_and_equivariance(model):
    a = _atoms()
    e0, f0 = _ef(model, a)
    rot = Rotation.random(random_state=1).as_matrix()
    reflect = np.diag([1.0, -1.0, 1.0])
    for q in (rot, reflect @ rot):
        b = a.copy()
        b.positions = a.positions @ q.T + np.array([0.3, -2.0, 5.0])
        e1, f1 = _ef(model, b)
        assert e1 == pytest.approx(e0, abs=1e-10)
        np.testing.assert_allclose(f1, f0 @ q.T, atol=1e-10)
    perm = np.random.default_rng(2).permutation(len(a))
    e2, f2 = _ef(model, a[perm])
    assert e2 == pytest.approx(e0, abs=1e-10)
    np.testing.assert_allclose(f2, f0[perm], atol=1e-10)


def test_forces_match_finite_differences(model):
    a = _atoms(3)
    _, f = _ef(model, a)
    h = 1e-5
    for i in range(len(a)):
        for k in range(3):
            p, m = a.copy(), a.copy()
            p.positions[i, k] += h
            m.positions[i, k] -= h
            fd = -(_ef(model, p)[0] - _ef(model, m)[0]) / (2 * h)
            assert f[i, k] == pytest.approx(fd, abs=1e-6)


def test_periodic_images_and_cutoff():
    torch.manual_seed(1)
    m = EGNN(hidden=16, n_layers=2, n_rbf=8, cutoff=3.0).double().eval()
    rng = np.random.default_rng(5)
    a = Atoms("Si4O8", positions=rng.uniform(0, 5, (12, 3)), cell=np.eye(3) * 5.0, pbc=True)
    e0, f0 = _ef(m, a, cutoff=3.0)
    b = a.copy()
    b.positions += np.array([1.7, -0.4, 2.2])
    b.wrap()
    e1, f1 = _ef(m, b, cutoff=3.0)
    assert e1 == pytest.approx(e0, abs=1e-10)
    np.testing.assert_allclose(f1, f0, atol=1e-10)
    # A 2x1x1 supercell has exactly twice the energy (extensivity through periodic images).
    e2, _ = _ef(m, a.repeat((2, 1, 1)), cutoff=3.0)
    assert e2 == pytest.approx(2 * e0, abs=1e-9)
    # Forces stay -grad E with the cutoff envelope in play.
    h = 1e-5
    p, q = a.copy(), a.copy()
    p.positions[0, 0] += h
    q.positions[0, 0] -= h
    fd = -(_ef(m, p, 3.0)[0] - _ef(m, q, 3.0)[0]) / (2 * h)
    assert f0[0, 0] == pytest.approx(fd, abs=1e-6)


def test_charges_reach_the_model(model):
    a = _atoms(4)
    b = a.copy()
    b.set_initial_charges(-a.get_initial_charges()[::-1])
    assert _ef(model, a)[0] != pytest.approx(_ef(model, b)[0], abs=1e-8)


def test_batched_equals_single(model):
    items = [graph_item(_atoms(s, n), None) for s, n in ((0, 4), (1, 6), (2, 3))]
    batch = collate(items, torch.float64)
    e, f = energy_and_forces(model, batch)
    offset = 0
    for k, it in enumerate(items):
        e1, f1 = energy_and_forces(model, collate([it], torch.float64))
        assert e[k].item() == pytest.approx(e1.item(), abs=1e-12)
        n = len(it["numbers"])
        np.testing.assert_allclose(f[offset:offset + n].detach(), f1.detach(), atol=1e-12)
        offset += n
    rep = batch.repeat(3)
    e3, _ = energy_and_forces(model, rep)
    np.testing.assert_allclose(e3.detach().reshape(3, -1), e.detach().expand(3, -1), atol=1e-12)
