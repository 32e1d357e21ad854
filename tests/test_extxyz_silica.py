"""Datasets from files: any extxyz by path, and the SCAN silica (GAP-22) loader and fetch."""

import hashlib
import io
import json
import zipfile

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

import uqbench
from uqbench.cli import main
from uqbench.datasets import silica_gap22
from uqbench.errors import UQBenchError

CONFIG_TYPES = ["bulk_cryst"] * 12 + ["bulk_amo"] * 12 + ["liquid"] * 4 + ["quench"] * 4 + [
    "cluster"] * 3 + ["other"] * 2


def _gap22_like(path, n_bad=None):
    """A small file in the GAP-22 layout: SinglePointCalculator energy/forces/stress,
    free_energy and config_type in info, cells for bulk, no cell for clusters."""
    rng = np.random.default_rng(0)
    frames = []
    for k, ct in enumerate(CONFIG_TYPES):
        n = 6
        atoms = Atoms(["Si", "O", "O"] * 2, positions=rng.uniform(0, 6, (n, 3)))
        if ct != "cluster":
            atoms.cell = np.eye(3) * 6.5
            atoms.pbc = True
        atoms.info.update(config_type=ct, free_energy=-40.0 - k, simulation_state="x")
        stress = rng.normal(size=6) * 1e-3
        if ct != "cluster":  # GAP's fitting label, from which uqbench takes the stress
            full = stress[[[0, 5, 4], [5, 1, 3], [4, 3, 2]]]
            atoms.info["virials"] = (-full * atoms.get_volume()).ravel()
        atoms.calc = SinglePointCalculator(atoms, energy=-40.0 - k,
                                           forces=rng.normal(size=(n, 3)), stress=stress)
        frames.append(atoms)
    import ase.io

    ase.io.write(path, frames, format="extxyz")
    return frames


def test_silica_offline_says_how(tmp_path, monkeypatch):
    monkeypatch.setenv("UQBENCH_CACHE", str(tmp_path))
    with pytest.raises(UQBenchError, match="uqbench datasets fetch silica.*--data-path"):
        uqbench.load_dataset("silica")


def test_silica_from_local_file(tmp_path):
    path = tmp_path / "dataset.scan.2.xyz"
    _gap22_like(path)
    data = uqbench.load_dataset("silica", data_path=str(path))
    sizes = data.sizes()
    assert sizes["ood-liquid"] == 4 and sizes["ood-quench"] == 4 and sizes["ood-cluster"] == 3
    assert sizes["train"] + sizes["val"] + sizes["test"] == 24  # 'other' is left out
    a = data.splits["train"][0]
    assert "energy" in a.info and a.arrays["forces"].shape == (6, 3) and a.calc is None
    assert a.info["stress"].shape == (3, 3)  # the stress label, for the losses' stress term
    assert all("stress" not in c.info for c in data.splits["ood-cluster"])


def test_run_on_local_silica_file(tmp_path):
    path = tmp_path / "dataset.scan.2.xyz"
    _gap22_like(path)
    out = tmp_path / "out"
    assert main(["run", "-m", "ensemble-egnn", "-d", "silica", "--data-path", str(path),
                 "--quick", "-p", "max_epochs=1", "-p", "n_members=2", "--out",
                 str(out)]) == 0
    record = json.loads(next(out.rglob("*.json")).read_text())
    assert set(record["metrics"]) == {"test", "ood-cluster", "ood-liquid", "ood-quench"}


def _serve_zip(tmp_path, data: bytes, checksum: str | None = None):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(silica_gap22.MEMBER, data)
    blob = buf.getvalue()
    zpath = tmp_path / "record.zip"
    zpath.write_bytes(blob)
    md5 = checksum or "md5:" + hashlib.md5(blob).hexdigest()
    api = tmp_path / "api.json"
    api.write_text(json.dumps({"files": [{"key": silica_gap22.ZIP_NAME, "checksum": md5}]}))
    return api.as_uri(), zpath.as_uri()


def test_fetch_verifies_and_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("UQBENCH_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "src.xyz"
    _gap22_like(src)
    api, url = _serve_zip(tmp_path, src.read_bytes())
    dest = silica_gap22.fetch_silica(api_url=api, zip_url=url)
    assert dest.read_bytes() == src.read_bytes()
    prov = json.loads((dest.parent / "provenance.json").read_text())
    assert prov["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert uqbench.load_dataset("silica").sizes()["ood-liquid"] == 4


def test_fetch_rejects_a_bad_checksum(tmp_path, monkeypatch):
    monkeypatch.setenv("UQBENCH_CACHE", str(tmp_path / "cache"))
    api, url = _serve_zip(tmp_path, b"data", checksum="md5:" + "0" * 32)
    with pytest.raises(UQBenchError, match="checksum mismatch"):
        silica_gap22.fetch_silica(api_url=api, zip_url=url)
    assert not silica_gap22.cached_path().exists()


def test_any_extxyz_by_path_with_split_key(tmp_path):
    path = tmp_path / "mine.xyz"
    frames = _gap22_like(path)
    for k, a in enumerate(frames):
        a.info["part"] = ["train", "train", "test", "ood-far", "val"][k % 5]
    import ase.io

    ase.io.write(path, frames, format="extxyz")
    data = uqbench.load_dataset(str(path), split_key="part")
    assert set(data.splits) == {"train", "val", "test", "ood-far"}
    out = tmp_path / "out"
    assert main(["run", "-m", "mcdropout-egnn", "-d", str(path), "--split-key", "part",
                 "--quick", "-p", "max_epochs=1", "-p", "n_samples=2", "--out",
                 str(out)]) == 0
    assert len(list(out.rglob("*.json"))) == 1


def _write(path, frames):
    import ase.io

    ase.io.write(path, frames, format="extxyz")


@pytest.mark.parametrize("problem, message", [
    ("no-labels", "neither an energy nor a forces label"),
    ("nan-energy", "non-finite energy"),
    ("nan-positions", "non-finite positions"),
    ("empty-split", "'test' split is empty"),
    ("bad-split-name", "no split name"),
])
def test_extxyz_bad_input_one_line_exit_2(tmp_path, problem, message, capsys):
    rng = np.random.default_rng(1)
    frames = []
    for k in range(6):
        a = Atoms("SiO2", positions=rng.uniform(0, 3, (3, 3)))
        a.info["energy"] = -1.0 * k
        a.arrays["forces"] = rng.normal(size=(3, 3))
        a.info["part"] = "train" if k < 4 else "test"
        frames.append(a)
    if problem == "no-labels":
        del frames[2].info["energy"]
        del frames[2].arrays["forces"]
    elif problem == "nan-energy":
        frames[3].info["energy"] = np.nan
    elif problem == "nan-positions":
        frames[1].positions[0, 0] = np.nan
    elif problem == "empty-split":
        for a in frames:
            a.info["part"] = "train"
    elif problem == "bad-split-name":
        frames[0].info["part"] = "holdout"
    path = tmp_path / "bad.xyz"
    _write(path, frames)
    out = tmp_path / "out"
    code = main(["run", "-m", "ensemble-egnn", "-d", str(path), "--split-key", "part",
                 "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not list(out.rglob("*.json"))


def test_extxyz_unknown_element_and_missing_file(tmp_path, capsys):
    path = tmp_path / "x.xyz"
    path.write_text("1\nProperties=species:S:1:pos:R:3 energy=1.0\nQq 0 0 0\n")
    assert main(["run", "-m", "ensemble-egnn", "-d", str(path), "--out",
                 str(tmp_path / "o")]) == 2
    assert main(["run", "-m", "ensemble-egnn", "-d", str(tmp_path / "nope.xyz"), "--out",
                 str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "no such data file" in err[1]


def test_gap22_stress_comes_from_virials_whatever_the_stress_field_holds(tmp_path, capsys):
    """The ingest notes' layout: info keys config_type, energy, free_energy,
    simulation_state, stress (kilobar; 9 or 6 values, or a per-atom column),
    sub_simulation_type, virials (eV). Stress must be -virials / V every time."""
    import ase.io

    rng = np.random.default_rng(3)
    frames, expected = [], []
    kinds = ["kbar9", "kbar6", "per_atom", "ev_agrees", "flipped", "none", "no_virials"] * 2
    types = ["bulk_cryst", "bulk_amo"] * 7
    for k, (kind, ct) in enumerate(zip(kinds, types, strict=True)):
        atoms = Atoms(["Si", "O", "O"] * 2, positions=rng.uniform(0, 6, (6, 3)),
                      cell=np.diag([6.0, 6.5, 7.0]), pbc=True)
        a = rng.normal(size=(3, 3)) * 1e-3
        sigma = a + a.T  # eV/Å^3, ASE's sign
        virial = -sigma * atoms.get_volume()
        atoms.info.update(config_type=ct, energy=-40.0 - k, free_energy=-40.0 - k,
                          simulation_state="x", sub_simulation_type="y")
        atoms.arrays["forces"] = rng.normal(size=(6, 3))
        if kind != "no_virials":
            atoms.info["virials"] = virial.ravel()
            expected.append(sigma)
        else:
            expected.append(None)
        kbar = sigma * silica_gap22.EV_PER_A3_IN_KBAR
        if kind == "kbar9":
            atoms.info["stress"] = kbar.ravel()
        elif kind == "kbar6":
            atoms.info["stress"] = kbar[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
        elif kind == "per_atom":
            atoms.arrays["stress"] = np.tile(kbar.ravel(), (6, 1))
        elif kind == "ev_agrees":
            atoms.info["stress"] = sigma.ravel()
        elif kind == "flipped":
            atoms.info["stress"] = (-sigma).ravel()
        frames.append(atoms)
    path = tmp_path / "dataset.scan.2.xyz"
    ase.io.write(path, frames, format="extxyz")
    from uqbench.datasets.extxyz import read_labelled

    back = read_labelled(path, virial_stress=False)
    counts = silica_gap22.stress_from_virials(back)
    for atoms, sigma in zip(back, expected, strict=True):
        if sigma is None:
            assert "stress" not in atoms.info
        else:
            np.testing.assert_allclose(atoms.info["stress"], sigma, rtol=1e-6, atol=1e-12)
    assert counts["from_virials"] == 12 and counts["no_virials"] == 2
    assert counts["kbar"] == 4 and counts["agrees"] == 2 and counts["sign_flipped"] == 2
    data = uqbench.load_dataset("silica", data_path=str(path))
    note = capsys.readouterr().err
    assert "stress = -virials/V" in note and "kilobar on 4" in note
    assert data.options["stress_labels"]["from_virials"] == 12
