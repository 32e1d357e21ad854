"""The BOTNet ethanol dataset: read offline from the shared copy, checksums enforced, the
download path tested on local copies."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from uqbench.cli import main
from uqbench.datasets.ethanol import SHA256, fetch_ethanol, load_ethanol
from uqbench.errors import UQBenchError

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "botnet-ethanol"
pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason="the shared BOTNet ethanol copy")


@pytest.fixture(scope="module")
def ethanol():
    return load_ethanol(data_dir=str(SHARED))


def test_splits_shift_one_thing_each(ethanol):
    sizes = ethanol.sizes()
    assert sizes == {"train": 900, "val": 100, "test": 1000, "ood-methanol": 145,
                     "ood-h-removal": 60, "ood-normal-modes": 55}
    assert all(len(a) == 9 for s in ("train", "val", "test") for a in ethanol.splits[s])
    assert all(a.get_chemical_formula() == "CH4O" for a in ethanol.splits["ood-methanol"])
    for name in ("ood-h-removal", "ood-normal-modes"):  # energies only
        assert all("forces" not in a.arrays for a in ethanol.splits[name])
    assert all("forces" in a.arrays for a in ethanol.splits["test"])
    # disjoint: no test frame in train or val
    from uqbench.dataset import overlaps

    assert overlaps(ethanol.splits) == []


def test_energies_are_atomisation_energies(ethanol):
    import ase.io

    isolated = {a.get_chemical_symbols()[0]: a.get_potential_energy()
                for a in ase.io.read(SHARED / "isolated_atoms.xyz", ":")}
    raw = ase.io.read(SHARED / "test_MD.xyz", "0")
    expected = raw.get_potential_energy() - sum(isolated[s] for s in raw.get_chemical_symbols())
    assert ethanol.splits["test"][0].info["energy"] == pytest.approx(expected, rel=1e-12)
    e = np.array([a.info["energy"] / len(a) for a in ethanol.splits["train"]])
    assert -5.0 < e.min() < e.max() < -4.0  # eV/atom: bound, not -466 eV/atom totals


def test_seeded_val_and_quick(ethanol):
    other = load_ethanol(data_dir=str(SHARED), seed=1, train_size=50)
    assert len(other.splits["train"]) == 50
    assert ({id(a) for a in other.splits["val"]} != {id(a) for a in ethanol.splits["val"]})
    quick = load_ethanol(data_dir=str(SHARED), quick=True)
    assert {k: len(v) for k, v in quick.splits.items()} == {
        "train": 64, "val": 16, "test": 32, "ood-methanol": 32, "ood-h-removal": 32,
        "ood-normal-modes": 32}
    dimers = load_ethanol(data_dir=str(SHARED), include_dimers=True, quick=True)
    assert all(len(a) == 2 for a in dimers.splits["ood-dimers"])


def test_a_missing_or_corrupt_file_is_one_line_naming_it(tmp_path):
    for name in SHA256:
        shutil.copy(SHARED / name, tmp_path / name)
    (tmp_path / "test_MD.xyz").unlink()
    with pytest.raises(UQBenchError, match="test_MD.xyz is missing.*data_dir"):
        load_ethanol(data_dir=str(tmp_path))
    shutil.copy(SHARED / "test_MD.xyz", tmp_path / "test_MD.xyz")
    text = (tmp_path / "train.xyz").read_text()
    (tmp_path / "train.xyz").write_text(text.replace("-4209.4657843064815", "-4209.5"))
    with pytest.raises(UQBenchError, match="train.xyz is not the published file"):
        load_ethanol(data_dir=str(tmp_path))


def test_fetch_checks_every_file_against_its_pinned_sha256(tmp_path):
    """The real download code on local copies (a file:// URL of the same layout)."""
    source = tmp_path / "source"
    source.mkdir()
    for name in SHA256:
        shutil.copy(SHARED / name, source / name)
    got = fetch_ethanol(tmp_path / "cache", url=source.as_uri() + "/{name}")
    assert sorted(p.name for p in got.iterdir()) == sorted(SHA256)
    assert load_ethanol(data_dir=str(got)).sizes()["test"] == 1000
    bad = tmp_path / "bad"
    shutil.copytree(source, bad)
    (bad / "isolated_atoms.xyz").write_text("tampered\n")
    with pytest.raises(UQBenchError, match="isolated_atoms.xyz: SHA-256 mismatch"):
        fetch_ethanol(tmp_path / "cache2", url=bad.as_uri() + "/{name}")
    assert not (tmp_path / "cache2" / "isolated_atoms.xyz").exists()
    with pytest.raises(UQBenchError, match="cannot download"):
        fetch_ethanol(tmp_path / "cache3", url=(tmp_path / "nowhere").as_uri() + "/{name}")


def test_run_records_offline_from_the_shared_copy(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("UQBENCH_ETHANOL_DIR", str(SHARED))
    out = tmp_path / "out"
    assert main(["run", "--method", "llpr-egnn", "--dataset", "ethanol", "--quick",
                 "-p", "max_steps=20", "--out", str(out)]) == 0
    (path,) = out.rglob("*.json")
    record = json.loads(path.read_text())
    assert record["dataset"]["key"] == "ethanol"
    assert set(record["metrics"]) == {"test", "ood-methanol", "ood-h-removal",
                                      "ood-normal-modes"}
    assert set(record["metrics"]["ood-h-removal"]) == {"energy"}  # energies only
    assert "ethanol" in capsys.readouterr().out


def test_missing_data_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("UQBENCH_ETHANOL_DIR", str(tmp_path / "nothing"))
    out = tmp_path / "out"
    assert main(["run", "--method", "egnn", "--dataset", "ethanol", "--quick",
                 "--out", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "is missing" in lines[0] and "UQBENCH_ETHANOL_DIR" in lines[0]
    assert not out.exists()
