"""The charged N-body dataset: exact Coulomb labels, protocol, splits, determinism, cache."""

import numpy as np
import pytest

from uqbench import load_dataset
from uqbench.datasets import nbody
from uqbench.errors import UQBenchError


def test_coulomb_energy_hand_case():
    # +1 and -1 at distance 2, +1 at distance 1 from the first and sqrt(5) from the second.
    pos = np.array([[0.0, 0, 0], [2.0, 0, 0], [0.0, 1.0, 0]])
    q = np.array([1.0, -1.0, 1.0])
    e, _ = nbody.coulomb(pos, q)
    assert e == pytest.approx(-1 / 2 + 1 / 1 - 1 / np.sqrt(5), abs=1e-12)


def test_forces_are_minus_gradient_of_energy():
    rng = np.random.default_rng(0)
    pos = rng.normal(size=(6, 3))
    q = rng.choice([-1.0, 1.0], size=6)
    _, f = nbody.coulomb(pos, q)
    h = 1e-6
    fd = np.zeros_like(pos)
    for i in range(6):
        for k in range(3):
            p, m = pos.copy(), pos.copy()
            p[i, k] += h
            m[i, k] -= h
            fd[i, k] = -(nbody.coulomb(p, q)[0] - nbody.coulomb(m, q)[0]) / (2 * h)
    np.testing.assert_allclose(f, fd, atol=1e-6)


def test_labels_are_exact_and_unclipped(tiny_nbody):
    for structures in tiny_nbody.splits.values():
        for atoms in structures[:5]:
            q = atoms.get_initial_charges()
            assert set(np.unique(q)) <= {-1.0, 1.0}
            e, f = nbody.coulomb(atoms.positions, q)
            assert atoms.info["energy"] == pytest.approx(e, rel=1e-12)
            np.testing.assert_allclose(atoms.arrays["forces"], f, rtol=1e-12)
    big = max(np.abs(a.arrays["forces"]).max() for a in tiny_nbody.splits["ood-close"])
    assert big > 0  # labels may exceed the simulator's clip; they are never clipped


def test_splits_follow_the_protocol(tiny_nbody):
    s = tiny_nbody.splits
    assert tiny_nbody.sizes() == {"train": 40, "val": 20, "test": 20, "ood-n": 20,
                                  "ood-close": 20}
    assert all(len(a) == 5 for a in s["train"] + s["val"] + s["test"] + s["ood-close"])
    assert all(len(a) == 10 for a in s["ood-n"])
    for a in s["train"] + s["test"]:
        assert nbody.min_distance(a.positions) >= nbody.R_CLOSE
    for a in s["ood-close"]:
        assert nbody.R_FLOOR <= nbody.min_distance(a.positions) < nbody.R_CLOSE
    assert tiny_nbody.test_splits == ["test", "ood-close", "ood-n"]


def test_initial_conditions_match_the_nri_protocol():
    seeds = [np.random.SeedSequence([0, 0, k]) for k in range(200)]
    rng_pos, rng_speed = [], []
    for ss in seeds:
        rng = np.random.default_rng(ss)
        rng.choice([-1.0, 1.0], size=5)
        rng_pos.append(rng.normal(size=(5, 3)))
        v = rng.normal(size=(5, 3))
        rng_speed.append(np.linalg.norm(0.5 * v / np.linalg.norm(v, axis=1, keepdims=True), axis=1))
    np.testing.assert_allclose(np.concatenate(rng_speed), 0.5)
    # The simulator conserves energy up to leapfrog error while forces stay below the clip.
    frames, charges = nbody.simulate(seeds[:4], 5)
    assert frames.shape == (4, nbody.N_STEPS // nbody.FRAME_EVERY, 5, 3)


def test_generation_is_deterministic_nested_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("UQBENCH_CACHE", str(tmp_path))
    small = load_dataset("nbody", train_size=10, val_size=5, test_size=5, ood_size=5)
    files = list(tmp_path.rglob("*.npz"))
    assert len(files) == 1
    again = load_dataset("nbody", train_size=10, val_size=5, test_size=5, ood_size=5)
    bigger = nbody.load_nbody(train_size=25, val_size=5, test_size=5, ood_size=5,
                              use_cache=False)
    for split in small.splits:
        for a, b in zip(small.splits[split], again.splits[split], strict=True):
            np.testing.assert_allclose(a.positions, b.positions, atol=1e-12)
            np.testing.assert_array_equal(a.get_initial_charges(), b.get_initial_charges())
            assert a.info["energy"] == pytest.approx(b.info["energy"], rel=1e-12)
    for a, b in zip(small.splits["train"], bigger.splits["train"][:10], strict=True):
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-12)
    for a, b in zip(small.splits["test"], bigger.splits["test"], strict=True):
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-12)
    other_seed = nbody.load_nbody(train_size=10, val_size=5, test_size=5, ood_size=5,
                                  seed=1, use_cache=False)
    assert not np.allclose(other_seed.splits["train"][0].positions,
                           small.splits["train"][0].positions)


def test_bad_sizes_are_user_errors():
    with pytest.raises(UQBenchError, match="train_size"):
        nbody.load_nbody(train_size=0)
