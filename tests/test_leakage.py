"""Leakage is refused by `uqbench run` in seconds: a structure in two splits, a spec that
names a key twice."""

from __future__ import annotations

import json
import time

import ase.io
import numpy as np
import pytest
from ase import Atoms

from uqbench.cli import main
from uqbench.dataset import overlaps, structure_key

FAST = ["-p", "max_steps=2", "-p", "backbone__hidden=8", "-p", "backbone__n_layers=1"]


def _frames(n: int, seed: int) -> list[Atoms]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        a = Atoms("OH2", positions=rng.normal(size=(3, 3)) + [[0, 0, 0], [1, 0, 0], [0, 1, 0]])
        a.info["energy"] = float(rng.normal())
        a.arrays["forces"] = rng.normal(size=(3, 3))
        out.append(a)
    return out


def _spec(tmp_path, splits: str) -> str:
    ase.io.write(tmp_path / "train.xyz", _frames(20, 0), format="extxyz")
    ase.io.write(tmp_path / "test.xyz", _frames(8, 1), format="extxyz")
    ase.io.write(tmp_path / "mix.xyz", _frames(8, 1) + _frames(3, 2), format="extxyz")
    ase.io.write(tmp_path / "other.xyz", _frames(6, 3), format="extxyz")
    path = tmp_path / "spec.yaml"
    path.write_text(f"name: water\nsplits:\n{splits}")
    return str(path)


def _refused(tmp_path, capsys, spec: str, words: str, extra=()) -> None:
    out = tmp_path / "out"
    start = time.perf_counter()
    code = main(["run", "-m", "egnn", "-d", spec, "--out", str(out), *FAST, *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("uqbench: error:"), err
    assert words in err[0], err[0]
    assert "Traceback" not in err[0]
    assert not list(out.rglob("*.json")) and not list(out.rglob("*.log"))
    assert time.perf_counter() - start < 30  # refused before any training


@pytest.mark.parametrize("splits, words", [
    ("  train: train.xyz\n  val: test.xyz\n  test: test.xyz\n",
     "test shares 8 of its 8 structures with val"),
    ("  train: train.xyz\n  val: 0.2\n  test: test.xyz\n  ood-mix: mix.xyz\n",
     "ood-mix shares 8 of its 11 structures with test"),
    ("  train: train.xyz\n  val: 0.2\n  test: test.xyz\n  train: test.xyz\n",
     "duplicate key 'train'"),
])
def test_run_refuses_leaks(tmp_path, capsys, splits, words):
    _refused(tmp_path, capsys, _spec(tmp_path, splits), words)


def test_allow_overlap_accepts_and_records(tmp_path, capsys):
    spec = _spec(tmp_path, "  train: train.xyz\n  val: 0.2\n  test: test.xyz\n"
                 "  ood-mix: mix.xyz\n")
    out = tmp_path / "out"
    assert main(["run", "-m", "egnn", "-d", spec, "--out", str(out), *FAST,
                 "--allow-overlap"]) == 0
    (path,) = out.rglob("*.json")
    assert json.loads(path.read_text())["config"]["allow_overlap"] is True


def test_a_sweep_file_with_a_duplicate_key_is_one_line(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text("methods: [egnn]\ndatasets: [nbody]\nmethods: [p-egnn]\n")
    assert main(["sweep", str(path), "--out", str(tmp_path / "o"), "--serial"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "duplicate key 'methods'" in err[0] and "line 3" in err[0]


def test_structure_key_and_overlaps():
    a, b = _frames(2, 0)
    moved = a.copy()
    moved.positions[0, 0] += 1e-3
    assert structure_key(a) == structure_key(a.copy())
    assert structure_key(a) != structure_key(moved) != structure_key(b)
    periodic = a.copy()
    periodic.cell, periodic.pbc = np.eye(3) * 10, True
    assert structure_key(periodic) != structure_key(a)
    assert overlaps({"train": [a, b], "test": [b], "ood": [moved, a]}) == [
        ("train", "test", 1), ("train", "ood", 1)]


def test_datasets_check_names_each_pair(tmp_path, capsys):
    spec = _spec(tmp_path, "  train: train.xyz\n  val: test.xyz\n  test: test.xyz\n")
    main(["datasets", "check", spec])
    out = capsys.readouterr()
    assert "8 of the 8 structures of 'test' also appear in 'val'" in out.out + out.err
