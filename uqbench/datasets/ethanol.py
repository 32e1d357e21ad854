"""``ethanol``: the BOTNet ethanol set (Batatia et al. 2022, arXiv 2205.06643; MIT), real
DFT (Orca, PBE/def2-SVP; eV, Å) with named shifts.

Splits: ``train`` (1 000 rMD17 frames; ``val`` carved from it, seeded), ``test`` (1 000
other rMD17 frames, ``test_MD.xyz``), and OOD splits that each shift one thing:
``ood-methanol`` (another molecule of the same chemistry: the 145 methanol frames of
``test_eth_meth.xyz``, whose other 1 000 frames are the MD test set), ``ood-h-removal``
(bond breaking: the hydroxyl H pulled off, energies only), ``ood-normal-modes`` (far from
equilibrium along the 874 and 3 005 cm^-1 modes, energies only) and, with
``include_dimers``, ``ood-dimers`` (HH ... OO dissociation curves, energies only). Energies
are atomisation energies: each frame's DFT energy minus its atoms' energies in
``isolated_atoms.xyz`` (the same DFT settings).

The files are read from ``data_dir`` (or ``$UQBENCH_ETHANOL_DIR``), else from the cache,
where `fetch_ethanol` downloads them once from the public repository at a pinned commit,
each checked against its SHA-256; a missing or corrupt file is one line saying where to
put it.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path

import numpy as np

from uqbench.cache import cache_dir
from uqbench.dataset import Dataset
from uqbench.datasets.extxyz import read_labelled
from uqbench.errors import UQBenchError

REPOSITORY = "davkovacs/BOTNet-datasets"
COMMIT = "29e6d467317e4b5967b7ea5cbee54de953fa0d45"
FOLDER = "dataset_ethanol"
URL = f"https://raw.githubusercontent.com/{REPOSITORY}/{COMMIT}/{FOLDER}/{{name}}"
#: The SHA-256 of every file used, at `COMMIT`.
SHA256 = {
    "isolated_atoms.xyz": "a2a662390f31ad623ce493038e680bc34214f88d4432566bf8fbd0761be57583",
    "train.xyz": "a26a16d8910581fa321fedc3bd3dfe31f2460e8cbfdc7a8f65243f4fd7250dd0",
    "test_MD.xyz": "b8726933d5b9083989d8e3cc7013c18e0950cf0cbc6f6cd570fdb9759001031c",
    "test_eth_meth.xyz": "e9109584eb66d2ffe7509dd792c436e4b54bed2583a4de555bda9b2cd4799adf",
    "test_H_removal.xyz": "8d9f13272eb1c7570edaf6afc31e6f8670df38c41b82611504878576708b1a1c",
    "test_norm_mode_874.xyz":
        "13f363e0c141dc25af4d8f59668623a27e024c781a07a52f8565fc6bb0e58f99",
    "test_norm_mode_3005.xyz":
        "9412f0ac3562ee3f307e823eae5f6a9b793e1805feea908f58c9d24a0068f6b0",
    "test_dimers.xyz": "6beaf368c2caed6493a39c643438317246926675f14b188b7a2dcbd7868f7342",
}
ENV = "UQBENCH_ETHANOL_DIR"
#: What each OOD split shifts (the dataset card says the same).
SHIFTS = {
    "ood-methanol": "another molecule, same chemistry (C, H, O; 6 atoms)",
    "ood-h-removal": "bond breaking: the hydroxyl H pulled off (energies only)",
    "ood-normal-modes": "large displacements along one vibrational mode (energies only)",
    "ood-dimers": "two-atom dissociation curves (energies only)",
}
QUICK = {"train": 64, "val": 16, "other": 32}


def default_dir() -> Path:
    """Where the files are looked for: ``$UQBENCH_ETHANOL_DIR``, else the cache."""
    return Path(os.environ.get(ENV) or cache_dir() / "botnet-ethanol" / COMMIT[:12])


def _how(directory: Path) -> str:
    return (f"put the BOTNet ethanol files (github.com/{REPOSITORY}, {FOLDER}/ at commit "
            f"{COMMIT[:12]}) in {directory}, or pass -o data_dir=DIR (or set {ENV}), or run "
            "`uqbench datasets fetch ethanol` where there is a network")


def check_files(directory: Path, names: list[str]) -> None:
    """One line (`UQBenchError`) for the first of ``names`` missing from ``directory`` or
    whose SHA-256 differs from the pinned one."""
    for name in names:
        path = directory / name
        if not path.is_file():
            raise UQBenchError(f"ethanol: {path} is missing; {_how(directory)}")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != SHA256[name]:
            raise UQBenchError(f"ethanol: {path} is not the published file (SHA-256 "
                               f"{digest[:12]}..., expected {SHA256[name][:12]}...); "
                               f"{_how(directory)}")


def fetch_ethanol(directory: Path | None = None, url: str = URL,
                  timeout: float = 60.0) -> Path:
    """Download every file once (at `COMMIT`) into ``directory`` (default: the cache),
    each checked against its SHA-256 before it is kept; returns the directory."""
    directory = Path(directory or cache_dir() / "botnet-ethanol" / COMMIT[:12])
    directory.mkdir(parents=True, exist_ok=True)
    for name, expected in SHA256.items():
        dest = directory / name
        if dest.is_file() and hashlib.sha256(dest.read_bytes()).hexdigest() == expected:
            continue
        try:
            with urllib.request.urlopen(url.format(name=name), timeout=timeout) as response:
                blob = response.read()
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise UQBenchError(f"cannot download {name} ({reason}); {_how(directory)}"
                               ) from None
        if hashlib.sha256(blob).hexdigest() != expected:
            raise UQBenchError(f"{name}: SHA-256 mismatch with the pinned file; nothing was "
                               "kept")
        tmp = dest.with_name(f".{name}.{os.getpid()}.tmp")
        tmp.write_bytes(blob)
        os.replace(tmp, dest)
    return directory


def _subset(frames: list, size: int, rng: np.random.Generator) -> list:
    if len(frames) <= size:
        return frames
    return [frames[i] for i in np.sort(rng.permutation(len(frames))[:size])]


def load_ethanol(train_size: int | None = None, val_size: int = 100, seed: int = 0,
                 data_dir: str | None = None, include_dimers: bool = False,
                 quick: bool = False) -> Dataset:
    """The BOTNet ethanol dataset (see the module docstring). ``train_size``: the first
    structures of train's seeded shuffle after ``val_size`` are taken for val (default
    all 900); ``quick``: 64 train, 16 val and 32 of every other split (seeded)."""
    directory = Path(data_dir) if data_dir else default_dir()
    names = ["isolated_atoms.xyz", "train.xyz", "test_MD.xyz", "test_eth_meth.xyz",
             "test_H_removal.xyz", "test_norm_mode_874.xyz", "test_norm_mode_3005.xyz"]
    if include_dimers:
        names.append("test_dimers.xyz")
    check_files(directory, names)
    read = {name: read_labelled(directory / name) for name in names}
    reference = {}
    for atoms in read["isolated_atoms.xyz"]:
        reference[atoms.get_chemical_symbols()[0]] = float(atoms.info["energy"])
    rng = np.random.default_rng(seed)
    pool = [read["train.xyz"][i] for i in rng.permutation(len(read["train.xyz"]))]
    if not isinstance(val_size, int) or isinstance(val_size, bool) or not (
            1 <= val_size < len(pool)):
        raise UQBenchError(f"ethanol: val_size must be from 1 to {len(pool) - 1}; got "
                           f"{val_size!r}")
    val, train = pool[:val_size], pool[val_size:]
    if train_size is not None:
        if isinstance(train_size, bool) or not isinstance(train_size, int) or not (
                1 <= train_size <= len(train)):
            raise UQBenchError(f"ethanol: train size must be from 1 to {len(train)}; got "
                               f"{train_size!r}")
        train = train[:train_size]
    splits = {
        "train": train, "val": val, "test": read["test_MD.xyz"],
        "ood-methanol": [a for a in read["test_eth_meth.xyz"]
                         if a.info.get("config_type") == "methanol"],
        "ood-h-removal": read["test_H_removal.xyz"],
        "ood-normal-modes": read["test_norm_mode_874.xyz"] + read["test_norm_mode_3005.xyz"],
    }
    if include_dimers:
        splits["ood-dimers"] = read["test_dimers.xyz"]
    if quick:
        for name in list(splits):
            if name == "train" and train_size is not None:
                continue
            splits[name] = _subset(splits[name], QUICK.get(name, QUICK["other"]), rng)
    for frames in splits.values():
        for atoms in frames:
            atoms.info["energy"] -= sum(reference[s] for s in atoms.get_chemical_symbols())
    options = {"train_size": train_size, "val_size": val_size, "seed": seed,
               "include_dimers": include_dimers, "quick": quick, "commit": COMMIT,
               "reference_energies": reference, "shifts": {k: v for k, v in SHIFTS.items()
                                                           if k in splits}}
    return Dataset("ethanol", splits, options=options,
                   description="BOTNet ethanol (rMD17 frames, PBE/def2-SVP): real DFT with "
                               "named shifts")
