"""`Dataset`: named splits of labelled `ase.Atoms`, and the one label convention uqbench uses."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from ase import Atoms

from uqbench.errors import UQBenchError

ID_SPLITS = ("train", "val", "test")


@dataclass
class Dataset:
    """A benchmark dataset: ``splits`` maps split name to a list of labelled ``Atoms``.

    Labels follow one convention: ``atoms.info["energy"]`` (eV),
    ``atoms.arrays["forces"]`` (eV/Å) and, where the data has it, ``atoms.info["stress"]``
    (3 x 3, eV/Å^3, ASE's sign). A structure may lack energy or forces (a scan or reaction
    path often has energies only): training uses the labels present and each target is
    scored on the structures that have it. `normalise_labels` converts the ASE
    ``SinglePointCalculator`` convention (and GAP's ``virial``) into it. ID splits are
    ``train``, ``val``, ``test``; out-of-distribution splits are named ``ood-*``.
    """

    key: str
    splits: dict[str, list[Atoms]]
    options: dict = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        for name in ("train", "test"):
            if not self.splits.get(name):
                raise UQBenchError(f"dataset {self.key!r} has no (or an empty) {name!r} split")
        for name, structures in self.splits.items():
            if not structures:
                raise UQBenchError(f"dataset {self.key!r}: split {name!r} is empty")

    @property
    def test_splits(self) -> list[str]:
        """The splits that are scored: ``test`` first, then every ``ood-*`` split."""
        return ["test"] + sorted(s for s in self.splits if s.startswith("ood-"))

    def sizes(self) -> dict[str, int]:
        return {name: len(s) for name, s in self.splits.items()}


def normalise_labels(atoms: Atoms, virial_stress: bool = True) -> Atoms:
    """Move energy, forces and stress from a calculator (if any) into ``info`` / ``arrays``;
    a GAP-style ``virial`` (eV) becomes ``info["stress"]`` = -virial / V where no stress is
    given (``virial_stress=False``: leave that to the caller)."""
    calc = atoms.calc
    if calc is not None and getattr(calc, "results", None):
        if "energy" in calc.results and "energy" not in atoms.info:
            try:
                atoms.info["energy"] = float(calc.results["energy"])
            except (TypeError, ValueError):
                raise UQBenchError(f"energy {calc.results['energy']!r} is not a "
                                   "number") from None
        if "forces" in calc.results and "forces" not in atoms.arrays:
            atoms.arrays["forces"] = np.asarray(calc.results["forces"], dtype=np.float64)
        if "stress" in calc.results and "stress" not in atoms.info:
            stress = np.asarray(calc.results["stress"])
            if len(atoms) > 1 and stress.size in (6 * len(atoms), 9 * len(atoms)):
                # a per-atom column (some GAP files): not a label of the structure
                atoms.arrays["stress"] = stress.reshape(len(atoms), -1)
            else:
                atoms.info["stress"] = stress
        atoms.calc = None
    if "stress" not in atoms.info and virial_stress:
        virial = atoms.info.get("virial", atoms.info.get("virials"))
        if virial is not None and atoms.pbc.all():
            atoms.info["stress"] = -np.reshape(virial, (3, 3)) / atoms.get_volume()
    if "stress" in atoms.info:
        atoms.info["stress"] = full_stress(atoms.info["stress"])
    return atoms


#: ASE's Voigt order (xx, yy, zz, yz, xz, xy): the (row, column) of each component, and the
#: component at each place of the 3 x 3 tensor.
VOIGT = ([0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1])
FULL_FROM_VOIGT = [[0, 5, 4], [5, 1, 3], [4, 3, 2]]


def full_stress(stress) -> np.ndarray:
    """A 3 x 3 stress from ASE's Voigt order (xx, yy, zz, yz, xz, xy), 9 values or 3 x 3."""
    s = np.asarray(stress, dtype=np.float64)
    if s.shape == (6,):
        return s[FULL_FROM_VOIGT]
    if s.size == 9:
        return s.reshape(3, 3)
    raise UQBenchError(f"a stress label has {s.size} values; expected 6 (Voigt) or 9")


def energies(structures: list[Atoms]) -> np.ndarray:
    """Total energies (eV); NaN for a structure without an energy label."""
    return np.array([float(a.info.get("energy", np.nan)) for a in structures])


def forces(structures: list[Atoms]) -> np.ndarray:
    """Forces of every atom, concatenated (eV/Å); NaN rows for a structure without forces."""
    if not structures:
        return np.zeros((0, 3))
    return np.concatenate([np.asarray(a.arrays["forces"], dtype=np.float64)
                           if "forces" in a.arrays else np.full((len(a), 3), np.nan)
                           for a in structures])


def label_counts(structures: list[Atoms]) -> dict[str, int]:
    """How many structures carry each label (energy, forces, stress)."""
    return {"energy": sum("energy" in a.info for a in structures),
            "forces": sum("forces" in a.arrays for a in structures),
            "stress": sum("stress" in a.info for a in structures)}


def n_atoms(structures: list[Atoms]) -> np.ndarray:
    return np.array([len(a) for a in structures], dtype=np.int64)


def check_sizes(dataset: str, **sizes: int) -> None:
    """Split sizes must be positive integers (a one-line user error otherwise)."""
    for name, value in sizes.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UQBenchError(f"{dataset}: {name} must be a positive integer; got {value!r}")


#: How the calibration split is made when a dataset has none (recorded in every run's
#: configuration, so records made before the split existed keep other ids).
CALIBRATION_RULE = "half of val, by trajectory where frames name one, seeded"


def carve_calibration(val: list[Atoms], seed: int) -> tuple[list[Atoms], list[Atoms]]:
    """(val, calibration): a seeded half of ``val`` becomes the calibration split that every
    post-hoc fit uses (LLPR's constants, recalibration), disjoint from the val split that
    picks the best weights. Frames that name a ``trajectory`` move with their whole
    trajectory (neighbouring MD frames are nearly copies); fewer than 2 frames or 2
    trajectories: no calibration split."""
    groups: dict = {}
    for i, atoms in enumerate(val):
        groups.setdefault(atoms.info.get("trajectory", ("frame", i)), []).append(i)
    if len(groups) < 2:
        return list(val), []
    keys = list(groups)
    order = np.random.default_rng([seed, 0xCA1]).permutation(len(keys))
    chosen = {keys[k] for k in order[: len(keys) // 2]}
    cal = [val[i] for key in keys if key in chosen for i in groups[key]]
    rest = [val[i] for key in keys if key not in chosen for i in groups[key]]
    return rest, cal


def structure_key(atoms: Atoms, decimals: int = 5) -> bytes:
    """A hash key of a structure: its species, positions rounded to ``decimals`` Å, cell
    and periodicity. Two frames with one key are the same structure (a leak if they sit
    in two splits)."""
    return b"|".join((atoms.numbers.astype(np.int64).tobytes(),
                      np.round(atoms.positions, decimals).tobytes(),
                      np.round(np.asarray(atoms.cell.array), decimals).tobytes(),
                      np.asarray(atoms.pbc, dtype=bool).tobytes()))


def overlaps(splits: dict[str, list[Atoms]]) -> list[tuple[str, str, int]]:
    """Every pair of splits that shares structures (`structure_key`), with how many of the
    second split's structures the first holds, in split order."""
    keys = {name: {structure_key(a) for a in frames} for name, frames in splits.items()}
    names = list(splits)
    found = []
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            shared = sum(structure_key(a) in keys[first] for a in splits[second])
            if shared:
                found.append((first, second, shared))
    return found
