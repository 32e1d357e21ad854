"""Any labelled extxyz file as a benchmark dataset, with checks on what it holds."""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

from uqbench.dataset import ID_SPLITS, Dataset, normalise_labels
from uqbench.errors import UQBenchError


def read_labelled(path: str | Path, virial_stress: bool = True,
                  keys: dict[str, str | None] | None = None) -> list[Atoms]:
    """Frames of an extxyz file with an energy, forces or both (and stress, or GAP's virial,
    where a periodic frame has it), checked; one-line errors. ``virial_stress=False`` leaves a
    stress-from-virial choice to the caller (see `normalise_labels`). ``keys`` names the
    info key of the energy and the arrays key of the forces where they are not ``energy``
    and ``forces`` (None: ignore that label)."""
    path = Path(path)
    if not path.is_file():
        raise UQBenchError(f"no such data file {str(path)!r}")
    try:
        frames = ase.io.read(path, index=":", format="extxyz")
    except Exception as exc:  # ASE raises many types for malformed files
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UQBenchError(f"{path.name}: not a readable extxyz file ({message})") from None
    if not frames:
        raise UQBenchError(f"{path.name}: holds no structures")
    for k, atoms in enumerate(frames):
        where = f"{path.name}: structure {k}"
        try:
            normalise_labels(atoms, virial_stress)
        except UQBenchError as exc:
            raise UQBenchError(f"{where}: {exc}") from None
        if keys is not None:
            _use_keys(atoms, keys)
        if "energy" not in atoms.info and "forces" not in atoms.arrays:
            raise UQBenchError(f"{where} has neither an energy nor a forces label")
        if not np.isfinite(atoms.positions).all():
            raise UQBenchError(f"{where} has non-finite positions")
        if len(atoms) == 0:
            raise UQBenchError(f"{where} has no atoms")
        if atoms.pbc.any() and abs(np.linalg.det(atoms.cell.array)) < 1e-6:
            raise UQBenchError(f"{where} is periodic with a cell of zero volume (a missing "
                               "Lattice? pbc set by mistake?)")
        if "forces" in atoms.arrays:
            shape = np.shape(atoms.arrays["forces"])
            if shape != (len(atoms), 3):
                raise UQBenchError(f"{where} has forces of shape {shape}; expected "
                                   f"({len(atoms)}, 3)")
            if not np.isfinite(atoms.arrays["forces"]).all():
                raise UQBenchError(f"{where} has non-finite forces")
        if "energy" in atoms.info:
            try:
                atoms.info["energy"] = float(atoms.info["energy"])
            except (TypeError, ValueError):
                raise UQBenchError(f"{where} has an energy that is not a number") from None
            if not np.isfinite(atoms.info["energy"]):
                raise UQBenchError(f"{where} has a non-finite energy")
        if "stress" in atoms.info and not np.isfinite(atoms.info["stress"]).all():
            raise UQBenchError(f"{where} has a non-finite stress")
        if "stress" in atoms.info and not atoms.pbc.all():
            del atoms.info["stress"]  # no volume, no stress: a cluster's label is meaningless
        if (atoms.numbers < 1).any() or (atoms.numbers >= len(chemical_symbols)).any():
            raise UQBenchError(f"{where} has an unknown element")
    return frames


def _use_keys(atoms: Atoms, keys: dict[str, str | None]) -> None:
    """Make the user's energy and forces keys the labels, whatever else the file holds."""
    for label, store in (("energy", atoms.info), ("forces", atoms.arrays)):
        key = keys.get(label, label)
        if key == label:
            continue
        value = store.pop(key, None) if key is not None else None
        store.pop(label, None)
        if value is not None:
            store[label] = value


def assign_splits(frames: list[Atoms], split_key: str | None, split_map: dict | None,
                  train_size: int | None, seed: int, val_fraction: float = 0.1,
                  test_fraction: float = 0.1, source: str = "") -> dict[str, list[Atoms]]:
    """Splits from ``info[split_key]`` (values mapped by ``split_map``, or used as split
    names), or, without a key, a seeded random train/val/test split. ID frames (train, val,
    test together) are shuffled and re-split when a mapped value is 'id'."""
    rng = np.random.default_rng(seed)
    splits: dict[str, list[Atoms]] = {}
    if split_key is None:
        pool = {"id": frames}
    else:
        pool = {}
        for k, atoms in enumerate(frames):
            if split_key not in atoms.info:
                raise UQBenchError(f"{source}structure {k} has no info key {split_key!r}")
            value = str(atoms.info[split_key])
            name = split_map.get(value) if split_map is not None else value
            if name is None:
                continue  # a value the mapping leaves out
            if name != "id" and name not in ID_SPLITS and not name.startswith("ood-"):
                raise UQBenchError(f"{source}value {value!r} of {split_key!r} is no split name; "
                                   "use train, val, test, ood-* (or map it)")
            pool.setdefault(name, []).append(atoms)
    for name, items in pool.items():
        if name != "id":
            splits[name] = items
    if "id" in pool:
        items = [pool["id"][i] for i in rng.permutation(len(pool["id"]))]
        n_val = max(1, int(round(val_fraction * len(items))))
        n_test = max(1, int(round(test_fraction * len(items))))
        splits["test"] = items[:n_test]
        splits["val"] = items[n_test:n_test + n_val]
        splits["train"] = items[n_test + n_val:]
    if train_size is not None:
        if isinstance(train_size, bool) or not isinstance(train_size, int) or train_size < 1:
            raise UQBenchError(f"{source}train size must be a positive integer; got "
                               f"{train_size!r}")
        if train_size > len(splits.get("train", [])):
            raise UQBenchError(f"{source}train size {train_size} exceeds the "
                               f"{len(splits.get('train', []))} training structures")
        splits["train"] = splits["train"][:train_size]
    for name in ("train", "test"):
        if not splits.get(name):
            raise UQBenchError(f"{source}the {name!r} split is empty")
    for name, items in splits.items():
        if not items:
            raise UQBenchError(f"{source}the {name!r} split is empty")
    return splits


def load_extxyz(path: str | Path, split_key: str | None = None, split_map: dict | None = None,
                train_size: int | None = None, seed: int = 0, quick: bool = False) -> Dataset:
    """A dataset from any extxyz file with energies and forces.

    With ``split_key``, ``atoms.info[split_key]`` names each structure's split (train, val,
    test, ood-*, or 'id' for a seeded random ID split); without it, a seeded 80/10/10 split.
    """
    frames = read_labelled(path)
    splits = assign_splits(frames, split_key, split_map, train_size, seed,
                           source=f"{Path(path).name}: ")
    options = {"path": str(path), "split_key": split_key, "train_size": train_size,
               "seed": seed}
    return Dataset(Path(path).name, splits, options=options)
