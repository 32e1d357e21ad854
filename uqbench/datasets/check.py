"""`uqbench datasets check`: what a dataset holds, split by split, and what looks wrong."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.neighborlist import neighbor_list

from uqbench.dataset import Dataset, energies, forces, label_counts, n_atoms, overlaps

#: Distances searched for the closest pair (Å); closer than CLOSE is reported as a problem.
SEARCH, CLOSE = 3.0, 0.5
#: A split smaller than this gives noisy metrics.
FEW = 10


def min_distance(atoms: Atoms) -> float:
    """The closest pair of atoms (periodic images included), or inf beyond `SEARCH` Å.

    A molecule (no periodic axis) is searched with a k-d tree on its positions alone: an
    ASE neighbour list bins the whole (often 50 Å, empty) box it is given, which cost
    about 0.25 s per ethanol frame."""
    if not atoms.pbc.any():
        if len(atoms) < 2:
            return np.inf
        from scipy.spatial import cKDTree

        d, _ = cKDTree(atoms.positions).query(atoms.positions, k=2)
        closest = float(d[:, 1].min())
        return closest if closest <= SEARCH else np.inf
    d = neighbor_list("d", atoms, SEARCH)
    return float(d.min()) if d.size else np.inf


def closest_pairs(dataset: Dataset) -> dict[int, float]:
    """`min_distance` of every structure, once each (keyed by ``id``), with progress."""
    from uqbench.progress import Progress

    frames = [a for split in dataset.splits.values() for a in split]
    progress = Progress(len(frames), "checking distances", unit="structure")
    out = {}
    for atoms in frames:
        out[id(atoms)] = min_distance(atoms)
        progress.update(1)
    progress.close()
    return out


def split_rows(dataset: Dataset, closest: dict[int, float] | None = None) -> list[dict]:
    """One summary row per split (numbers in eV, Å)."""
    closest = closest if closest is not None else closest_pairs(dataset)
    rows = []
    for name, frames in dataset.splits.items():
        counts = n_atoms(frames)
        e = energies(frames) / counts
        e = e[np.isfinite(e)]
        f = np.linalg.norm(forces(frames), axis=1)
        f = f[np.isfinite(f)]
        labels = label_counts(frames)
        rows.append({
            "split": name, "structures": len(frames),
            "atoms": f"{counts.min()}-{counts.max()}" if counts.min() != counts.max()
            else str(counts.min()),
            "elements": " ".join(sorted({s for a in frames for s in a.get_chemical_symbols()})),
            "energy": labels["energy"], "forces": labels["forces"], "stress": labels["stress"],
            "E/atom min": float(e.min()) if e.size else np.nan,
            "E/atom max": float(e.max()) if e.size else np.nan,
            "|F| max": float(f.max()) if f.size else np.nan,
            "d min": min(closest[id(a)] for a in frames),
            "periodic": "yes" if all(a.pbc.all() for a in frames) else
            ("no" if not any(a.pbc.any() for a in frames) else "mixed"),
        })
    return rows


def problems(dataset: Dataset, closest: dict[int, float] | None = None) -> list[str]:
    """Everything that would make a benchmark on ``dataset`` mislead, one line each."""
    closest = closest if closest is not None else closest_pairs(dataset)
    found = []
    train = dataset.splits["train"]
    for first, second, shared in overlaps(dataset.splits):
        found.append(f"{shared} of the {len(dataset.splits[second])} structures of "
                     f"{second!r} also appear in {first!r} (identical atoms, positions and "
                     "cell): scores on them are not held out")
    train_elements = {s for a in train for s in a.get_chemical_symbols()}
    labels = label_counts(train)
    if not labels["energy"]:
        found.append("train has no energy labels: energies are learned from forces only, up "
                     "to a constant, and energy metrics will mean little")
    if not labels["forces"]:
        found.append("train has no force labels: forces are learned only through energies")
    if "val" not in dataset.splits:
        found.append("no val split: training keeps its last weights and tuning has no "
                     "held-out data (give val: 0.1 or files)")
    for name, frames in dataset.splits.items():
        new = {s for a in frames for s in a.get_chemical_symbols()} - train_elements
        if new:
            found.append(f"{name!r} has element(s) {', '.join(sorted(new))} that train lacks")
        close = sum(closest[id(a)] < CLOSE for a in frames)
        if close:
            found.append(f"{close} structure(s) of {name!r} have atoms closer than {CLOSE} Å "
                         "(units? a broken frame?)")
        if name != "train" and len(frames) < FEW:
            found.append(f"{name!r} has only {len(frames)} structures: its metrics will be "
                         "noisy")
        e = energies(frames) / n_atoms(frames)
        e = e[np.isfinite(e)]
        if e.size >= 5:
            med = np.median(e)
            mad = np.median(np.abs(e - med)) or 1e-12
            far = int(np.sum(np.abs(e - med) > 50 * mad))
            if far:
                found.append(f"{far} energy label(s) of {name!r} lie over 50 median absolute "
                             "deviations from its median (mixed units or references?)")
        if name != "train" and not label_counts(frames)["energy"] and not label_counts(
                frames)["forces"]:
            found.append(f"{name!r} has no labels: nothing can be scored on it")
    return found


def report(dataset: Dataset) -> tuple[str, list[str]]:
    """A printable summary of ``dataset`` and the list of problems found."""
    import pandas as pd

    closest = closest_pairs(dataset)
    frame = pd.DataFrame(split_rows(dataset, closest)).set_index("split")
    head = f"dataset {dataset.key}"
    if dataset.description:
        head += f": {dataset.description}"
    text = "\n".join([
        head,
        "labels: structures with an energy / forces / stress label; E/atom in eV/atom, "
        f"|F| in eV/Å, d min = closest pair in Å (inf: none within {SEARCH} Å)",
        frame.to_string(float_format=lambda v: f"{v:.4g}"),
    ])
    return text, problems(dataset, closest)
