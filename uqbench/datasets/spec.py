"""Your own DFT data as a dataset: a YAML spec file that names the files of each split.

A spec file describes data the way it is usually kept, as separate extxyz files::

    name: my-molecule            # the dataset's key in results and leaderboards
    description: 300 K MD of ... # optional
    splits:                      # a file, a glob, or a list of them (relative to this file)
      train: train_300K.xyz
      val: 0.1                   # a seeded fraction of train, or files
      test: test_300K.xyz
      ood-600K: test_600K.xyz    # every other split is named ood-<what shifts>
      ood-dihedral: dihedral_*.xyz
    labels:                      # optional: where the labels are (defaults shown)
      energy: energy             # an info key (or a calculator's energy)
      forces: forces             # an arrays key (or a calculator's forces)
      stress: null               # an info key; needs units.stress
      virial: null               # an info key (energy unit): stress = -virial / V
    units:                       # optional: the file's units (defaults shown)
      energy: eV                 # eV, meV, Hartree, Ry, kcal/mol, kJ/mol
      length: Å                  # Å (or A, Angstrom), Bohr, nm
      stress: null               # eV/Å^3, GPa, kbar or bar; required with labels.stress
    reference_energies: none     # none, fit (least squares on train composition), a
                                 # mapping element -> energy in the file's unit, or a
                                 # file of single-atom frames (isolated_atoms.xyz)

A split may keep only the frames whose info key has a value (or one of a list)::

      ood-methanol: {files: test_eth_meth.xyz, select: {config_type: methanol}}

``--quick`` keeps a seeded 64 training, 16 validation and 32 structures of every other
split.

A structure may carry an energy, forces or both (scans and reaction paths often have
energies only). Everything is converted to uqbench's convention (eV, Å, eV/Å, eV/Å^3 with
ASE's sign) when read; the files are never written to.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from ase import Atoms, units
from ase.data import atomic_numbers

from uqbench.dataset import ID_SPLITS, Dataset, full_stress
from uqbench.datasets.extxyz import read_labelled
from uqbench.errors import UQBenchError
from uqbench.params import load_yaml_strict

SPEC_SUFFIXES = (".yaml", ".yml")
TOP_KEYS = ("name", "description", "splits", "labels", "units", "reference_energies")
LABEL_KEYS = {"energy": "energy", "forces": "forces", "stress": None, "virial": None}
ENERGY_UNITS = {"eV": 1.0, "meV": 1e-3, "Hartree": units.Hartree, "Ry": units.Ry,
                "kcal/mol": units.kcal / units.mol, "kJ/mol": units.kJ / units.mol}
LENGTH_UNITS = {"Å": 1.0, "A": 1.0, "Angstrom": 1.0, "Bohr": units.Bohr, "nm": 10.0}
STRESS_UNITS = {"eV/Å^3": 1.0, "eV/A^3": 1.0, "GPa": units.GPa, "kbar": 0.1 * units.GPa,
                "bar": 1e-4 * units.GPa}


def is_spec(key: str) -> bool:
    return str(key).endswith(SPEC_SUFFIXES)


def read_spec(path: str | Path) -> dict[str, Any]:
    """The spec file as a checked mapping (files resolved and present); one-line errors.
    Cheap: reads no structure, so the runner checks a spec before any work."""
    path = Path(path)
    where = f"dataset spec {path.name}"
    try:
        spec = load_yaml_strict(path.read_text())
    except OSError as exc:
        raise UQBenchError(f"cannot read {where}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None)
        raise UQBenchError(f"{where}: not valid YAML{line}"
                           + (f" ({problem})" if problem else "")) from None
    if not isinstance(spec, dict):
        raise UQBenchError(f"{where} must be a mapping with at least 'name' and 'splits'")
    unknown = sorted(set(spec) - set(TOP_KEYS))
    if unknown:
        raise UQBenchError(f"{where}: unknown key(s) {', '.join(unknown)}; it may have "
                           f"{', '.join(TOP_KEYS)}")
    name = spec.get("name")
    if not isinstance(name, str) or not name.strip() or "/" in name:
        raise UQBenchError(f"{where}: 'name' must be a short name without '/' (the key of "
                           f"its results); got {name!r}")
    labels = {**LABEL_KEYS, **_mapping(spec, "labels", where)}
    bad = sorted(set(labels) - set(LABEL_KEYS))
    if bad:
        raise UQBenchError(f"{where}: unknown label(s) {', '.join(bad)}; labels are "
                           f"{', '.join(LABEL_KEYS)}")
    for key, value in labels.items():
        if value is not None and not isinstance(value, str):
            raise UQBenchError(f"{where}: labels.{key} must be a key name or null")
    unit = {"energy": "eV", "length": "Å", "stress": None, **_mapping(spec, "units", where)}
    for key, table in (("energy", ENERGY_UNITS), ("length", LENGTH_UNITS),
                       ("stress", STRESS_UNITS)):
        if key == "stress" and unit[key] is None:
            continue
        if unit[key] not in table:
            raise UQBenchError(f"{where}: units.{key} {unit[key]!r} is not one of "
                               f"{', '.join(table)}")
    if set(unit) - {"energy", "length", "stress"}:
        raise UQBenchError(f"{where}: units may give energy, length and stress")
    if labels["stress"] is not None and unit["stress"] is None:
        raise UQBenchError(f"{where}: labels.stress is set but units.stress is not; state "
                           f"the file's stress unit ({', '.join(STRESS_UNITS)}): a wrong "
                           "guess would train on stresses off by a factor or a sign")
    if labels["stress"] is not None and labels["virial"] is not None:
        raise UQBenchError(f"{where}: give labels.stress or labels.virial, not both")
    refs = spec.get("reference_energies", "none")
    if refs is None:
        refs = "none"
    if isinstance(refs, str) and refs not in ("none", "fit"):
        refs = _files(path.parent, refs, f"{where}: reference_energies")[0]
    if isinstance(refs, dict):
        for element, value in refs.items():
            if element not in atomic_numbers or isinstance(value, bool) or not isinstance(
                    value, int | float) or not np.isfinite(value):
                raise UQBenchError(f"{where}: reference_energies needs element: number "
                                   f"pairs; got {element!r}: {value!r}")
    elif not isinstance(refs, Path) and refs not in ("none", "fit"):
        raise UQBenchError(f"{where}: reference_energies must be none, fit, a mapping "
                           f"element -> energy or a file of single-atom frames; got {refs!r}")
    splits = spec.get("splits")
    if not isinstance(splits, dict) or not splits:
        raise UQBenchError(f"{where}: 'splits' must map split names to files (train: "
                           "train.xyz, test: test.xyz, ood-<name>: ...)")
    files: dict[str, list[Path]] = {}
    select: dict[str, dict[str, list[str]]] = {}
    val_fraction = None
    for split, value in splits.items():
        if split not in ID_SPLITS and not str(split).startswith("ood-"):
            raise UQBenchError(f"{where}: split {split!r} is no split name; use train, val, "
                               "test or ood-<what shifts>")
        if split == "val" and isinstance(value, float | int) and not isinstance(value, bool):
            if not 0 < value < 1:
                raise UQBenchError(f"{where}: val as a fraction of train must lie in (0, 1); "
                                   f"got {value!r}")
            val_fraction = float(value)
            continue
        if isinstance(value, dict):
            bad = sorted(set(value) - {"files", "select"})
            if bad or "files" not in value:
                raise UQBenchError(f"{where}: split {split!r} as a mapping needs 'files' and "
                                   f"may have 'select'; got {', '.join(map(str, value))}")
            chosen = value.get("select") or {}
            if not isinstance(chosen, dict) or not chosen:
                raise UQBenchError(f"{where}: split {split!r}: select must map an info key "
                                   "to a value or a list of values")
            select[split] = {str(k): [str(x) for x in (v if isinstance(v, list) else [v])]
                             for k, v in chosen.items()}
            value = value["files"]
        files[split] = _files(path.parent, value, f"{where}: split {split!r}")
    for split in ("train", "test"):
        if split not in files:
            raise UQBenchError(f"{where}: no {split!r} split")
    return {"path": path, "name": name.strip(), "description": spec.get("description") or "",
            "files": files, "select": select, "val_fraction": val_fraction, "labels": labels,
            "units": unit, "reference_energies": refs}


def _mapping(spec: dict, key: str, where: str) -> dict:
    value = spec.get(key) or {}
    if not isinstance(value, dict):
        raise UQBenchError(f"{where}: {key!r} must be a mapping")
    return value


def _files(root: Path, value: Any, where: str) -> list[Path]:
    """The files a split names: paths or globs (relative to the spec file), in sorted order
    within each glob; a pattern that matches nothing is an error."""
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, str) and v for v in items):
        raise UQBenchError(f"{where} must name a file, a glob or a list of them; got {value!r}")
    out: list[Path] = []
    for item in items:
        pattern = str(Path(item) if Path(item).is_absolute() else root / item)
        found = sorted(Path(p) for p in glob.glob(pattern)) if glob.has_magic(item) else (
            [Path(pattern)] if Path(pattern).is_file() else [])
        if not found:
            raise UQBenchError(f"{where}: no file matches {item!r} (relative to "
                               f"{root or '.'})")
        out.extend(found)
    return out


def _read_split(files: list[Path], spec: dict, split: str = "") -> list[Atoms]:
    frames: list[Atoms] = []
    select = spec.get("select", {}).get(split)
    labels, unit = spec["labels"], spec["units"]
    e_unit = ENERGY_UNITS[unit["energy"]]
    l_unit = LENGTH_UNITS[unit["length"]]
    for path in files:
        for atoms in read_labelled(path, virial_stress=False, keys=labels):
            if l_unit != 1.0:
                atoms.set_cell(atoms.cell.array * l_unit, scale_atoms=False)
                atoms.positions = atoms.positions * l_unit
            if "energy" in atoms.info:
                atoms.info["energy"] = atoms.info["energy"] * e_unit
            if "forces" in atoms.arrays:
                atoms.arrays["forces"] = atoms.arrays["forces"] * (e_unit / l_unit)
            stress = atoms.info.get(labels["stress"]) if labels["stress"] else None
            virial = atoms.info.get(labels["virial"]) if labels["virial"] else None
            atoms.info.pop("stress", None)  # only the stress the spec names is a label
            if atoms.pbc.all() and stress is not None:
                atoms.info["stress"] = full_stress(stress) * STRESS_UNITS[unit["stress"]]
            elif atoms.pbc.all() and virial is not None:
                virial = np.reshape(np.asarray(virial, dtype=float), (3, 3)) * e_unit
                atoms.info["stress"] = -virial / atoms.get_volume()
            atoms.info["source_file"] = path.name
            if select and not all(str(atoms.info.get(k)) in allowed
                                  for k, allowed in select.items()):
                continue
            frames.append(atoms)
    if select and not frames:
        raise UQBenchError(f"dataset spec {spec['path'].name}: split {split!r} selects no "
                           f"frame ({select})")
    return frames


#: What ``--quick`` keeps of a spec's splits (seeded): smoke-test sizes.
QUICK_SIZES = {"train": 64, "val": 16, "other": 32}


def _isolated_atoms(path: Path, e_unit: float) -> dict[str, float]:
    """Element -> energy (eV) from a file of single-atom frames (e.g. isolated_atoms.xyz)."""
    out: dict[str, float] = {}
    for k, atoms in enumerate(read_labelled(path, virial_stress=False)):
        where = f"{path.name}: structure {k}"
        if len(atoms) != 1 or "energy" not in atoms.info:
            raise UQBenchError(f"{where}: reference energies need single-atom frames with "
                               f"an energy; this one has {len(atoms)} atoms")
        element = atoms.get_chemical_symbols()[0]
        if element in out:
            raise UQBenchError(f"{where}: a second reference energy for {element}")
        out[element] = float(atoms.info["energy"]) * e_unit
    return out


def _composition(frames: list[Atoms], elements: list[int]) -> np.ndarray:
    return np.array([[np.sum(a.numbers == z) for z in elements] for a in frames], dtype=float)


def _reference_energies(spec: dict, train: list[Atoms], everything: list[Atoms]
                        ) -> dict[str, float]:
    """Per-element energies (eV) to subtract: given (converted to eV) or fitted by least
    squares to the training energies; empty for none."""
    refs = spec["reference_energies"]
    if refs == "none":
        return {}
    if isinstance(refs, Path):
        refs = _isolated_atoms(refs, 1.0)  # converted below with the file's unit
    if isinstance(refs, dict):
        e_unit = ENERGY_UNITS[spec["units"]["energy"]]
        missing = sorted({a.get_chemical_symbols()[i] for a in everything
                          for i in range(len(a))} - set(refs))
        if missing:
            raise UQBenchError(f"dataset spec {spec['path'].name}: reference_energies lacks "
                               f"{', '.join(missing)}")
        return {el: float(v) * e_unit for el, v in refs.items()}
    labelled = [a for a in train if "energy" in a.info]
    elements = sorted({int(z) for a in everything for z in a.numbers})
    train_elements = sorted({int(z) for a in labelled for z in a.numbers})
    if train_elements != elements:
        raise UQBenchError(f"dataset spec {spec['path'].name}: reference_energies: fit needs "
                           "every element in the training energies")
    x = _composition(labelled, elements)
    y = np.array([a.info["energy"] for a in labelled])
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    from ase.data import chemical_symbols

    return {chemical_symbols[z]: float(c) for z, c in zip(elements, coef, strict=True)}


def load_spec(path: str | Path, train_size: int | None = None, seed: int = 0,
              quick: bool = False) -> Dataset:
    """The dataset a spec file describes (see the module docstring). ``train_size`` keeps
    the first structures of the seeded shuffle of train (after any val fraction is taken
    from it); ``seed`` orders that shuffle. ``quick`` keeps `QUICK_SIZES` of each split
    (a seeded subset; ``train_size`` still wins for train)."""
    spec = read_spec(path)
    splits = {name: _read_split(files, spec, name) for name, files in spec["files"].items()}
    rng = np.random.default_rng(seed)
    train = [splits["train"][i] for i in rng.permutation(len(splits["train"]))]
    if spec["val_fraction"] is not None:
        n_val = max(1, int(round(spec["val_fraction"] * len(train))))
        if n_val >= len(train):
            raise UQBenchError(f"dataset spec {spec['path'].name}: val fraction leaves no "
                               "training structures")
        splits["val"], train = train[:n_val], train[n_val:]
    if train_size is not None:
        if isinstance(train_size, bool) or not isinstance(train_size, int) or train_size < 1:
            raise UQBenchError(f"{spec['name']}: train size must be a positive integer; got "
                               f"{train_size!r}")
        if train_size > len(train):
            raise UQBenchError(f"{spec['name']}: train size {train_size} exceeds the "
                               f"{len(train)} training structures")
        train = train[:train_size]
    splits["train"] = train
    if quick:
        for name in list(splits):
            size = QUICK_SIZES.get(name, QUICK_SIZES["other"])
            if name == "train" and train_size is not None:
                continue
            if len(splits[name]) > size:
                keep = np.sort(rng.permutation(len(splits[name]))[:size])
                splits[name] = [splits[name][i] for i in keep]
    everything = [a for frames in splits.values() for a in frames]
    refs = _reference_energies(spec, train, everything)
    if refs:
        for atoms in everything:
            if "energy" in atoms.info:
                atoms.info["energy"] -= sum(refs[s] for s in atoms.get_chemical_symbols())
    options = {"spec": str(spec["path"]), "train_size": train_size, "seed": seed,
               "quick": quick, "select": spec["select"],
               "units": spec["units"], "labels": spec["labels"],
               "reference_energies": refs or "none",
               "files": {k: [p.name for p in v] for k, v in spec["files"].items()}}
    return Dataset(spec["name"], splits, options=options, description=spec["description"])
