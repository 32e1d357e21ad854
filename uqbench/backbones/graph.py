"""Batched graphs of atomic structures: nodes, edges with periodic shifts, and labels."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from ase import Atoms
from ase.neighborlist import neighbor_list

from uqbench.dataset import full_stress
from uqbench.errors import UQBenchError
from uqbench.neighbours import periodic_pairs


@dataclass
class GraphBatch:
    """Structures concatenated into one graph; edges point from ``src`` to ``dst``.

    The vector of edge e is ``positions[src] - positions[dst] + shift[e]``; ``shift`` holds
    the Cartesian periodic-image offsets (zero for molecules), ``unit_shift`` the same in
    cell vectors (``shift = unit_shift @ cell``). ``extras`` holds one backbone-specific
    object per structure (e.g. CHGNet's angle graph) that travels with the batch.
    """

    positions: torch.Tensor  # [n_atoms, 3]
    numbers: torch.Tensor  # [n_atoms] atomic numbers
    charges: torch.Tensor  # [n_atoms]
    structure: torch.Tensor  # [n_atoms] structure index of each atom
    src: torch.Tensor  # [n_edges]
    dst: torch.Tensor  # [n_edges]
    shift: torch.Tensor  # [n_edges, 3]
    n_atoms: torch.Tensor  # [n_structures]
    cell: torch.Tensor | None = None  # [n_structures, 3, 3] (zeros for molecules)
    unit_shift: torch.Tensor | None = None  # [n_edges, 3]
    energy: torch.Tensor | None = None  # [n_structures]
    forces: torch.Tensor | None = None  # [n_atoms, 3]
    stress: torch.Tensor | None = None  # [n_structures, 3, 3], NaN where a structure has none
    extras: list | None = None  # one object per structure, or None
    # Which structures have an energy label and which atoms a force label; None when every
    # one has (the usual case, so complete batches take no masking step).
    energy_labelled: torch.Tensor | None = None  # [n_structures] bool
    forces_labelled: torch.Tensor | None = None  # [n_atoms] bool

    @property
    def n_structures(self) -> int:
        return int(self.n_atoms.shape[0])

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> GraphBatch:
        def move(t):
            if t is None:
                return None
            if isinstance(t, list):
                return [_move_extra(x, device, dtype) for x in t]
            if dtype is not None and t.is_floating_point():
                return t.to(device=device, dtype=dtype)
            return t.to(device)

        return GraphBatch(**{k: move(v) for k, v in self.__dict__.items()})

    def repeat(self, copies: int) -> GraphBatch:
        """``copies`` stacked replicas (copy c's structures follow copy c-1's)."""
        if copies == 1:
            return self
        n_at, n_st = self.positions.shape[0], self.n_structures
        dev = self.positions.device
        node_off = (torch.arange(copies, device=dev) * n_at).repeat_interleave(self.src.shape[0])
        struct_off = (torch.arange(copies, device=dev) * n_st).repeat_interleave(n_at)
        tile = lambda t: None if t is None else t.repeat(copies, *([1] * (t.dim() - 1)))  # noqa: E731
        return replace(
            self,
            positions=tile(self.positions), numbers=tile(self.numbers),
            charges=tile(self.charges), structure=tile(self.structure) + struct_off,
            src=tile(self.src) + node_off, dst=tile(self.dst) + node_off,
            shift=tile(self.shift), n_atoms=tile(self.n_atoms),
            cell=tile(self.cell), unit_shift=tile(self.unit_shift),
            energy=tile(self.energy), forces=tile(self.forces), stress=tile(self.stress),
            extras=None if self.extras is None else self.extras * copies,
            energy_labelled=tile(self.energy_labelled),
            forces_labelled=tile(self.forces_labelled),
        )


def _move_extra(extra, device, dtype):
    """A backbone's own per-structure graph, moved (and cast, where it can be)."""
    if not hasattr(extra, "to"):
        return extra
    if dtype is not None:
        try:
            return extra.to(device, dtype)
        except TypeError:  # e.g. CHGNet's CrystalGraph.to takes a device only
            pass
    return extra.to(device)


#: The most neighbours per atom a structure may have within a backbone's cutoff: about 20
#: times what dense solids and liquids have (35-55 within 5 Å); more means a cell too small
#: for its atoms (a unit slip, a molecule in a 1 Å box) and a neighbour search that would
#: not end.
MAX_NEIGHBOURS = 1000


def check_density(atoms: Atoms, cutoff: float | None) -> None:
    """One line (`UQBenchError`) where a periodic structure would have more than
    `MAX_NEIGHBOURS` neighbours per atom within ``cutoff`` Å (estimated from its density,
    before any neighbour search)."""
    if cutoff is None or not atoms.pbc.all():
        return
    volume = abs(float(np.linalg.det(atoms.cell.array)))
    if volume <= 0:
        raise UQBenchError("a periodic structure has a cell of zero volume")
    expected = len(atoms) / volume * 4.0 / 3.0 * np.pi * cutoff**3
    if expected > MAX_NEIGHBOURS:
        raise UQBenchError(
            f"a structure of {len(atoms)} atoms in a periodic cell of {volume:.3g} Å^3 would "
            f"have about {expected:,.0f} neighbours per atom within the cutoff of {cutoff} Å "
            f"(at most {MAX_NEIGHBOURS} are allowed): a cell too small for its atoms (units "
            "in Bohr or nm? a molecule given a periodic cell?)")


def graph_item(atoms: Atoms, cutoff: float | None) -> dict[str, np.ndarray]:
    """One structure's graph: all pairs when ``cutoff`` is None (no periodicity allowed),
    else every neighbour (periodic images included) within ``cutoff`` (see
    `check_density`)."""
    n = len(atoms)
    check_density(atoms, cutoff)
    if cutoff is None:
        if atoms.pbc.any():
            raise ValueError("a periodic structure needs a finite cutoff")
        src, dst = np.nonzero(~np.eye(n, dtype=bool))
        shift_int = np.zeros((src.size, 3))
    else:
        # D = positions[j] - positions[i] + S @ cell; here src=j, dst=i.
        if atoms.pbc.all():
            dst, src, shift_int = periodic_pairs(atoms.positions, atoms.cell.array, cutoff)
        else:
            dst, src, shift_int = neighbor_list("ijS", atoms, cutoff)
    return graph_item_from_edges(atoms, src, dst, shift_int)


def graph_item_from_edges(atoms: Atoms, src: np.ndarray, dst: np.ndarray,
                          unit_shift: np.ndarray) -> dict[str, np.ndarray]:
    """One structure's graph from a given edge list (a backbone's own neighbour list):
    the vector of edge e is ``x[src] - x[dst] + unit_shift[e] @ cell``."""
    cell = np.asarray(atoms.cell.array, dtype=np.float64)
    unit_shift = np.asarray(unit_shift, dtype=np.float64).reshape(-1, 3)
    item = {
        "positions": np.asarray(atoms.positions, dtype=np.float64),
        "numbers": atoms.numbers.astype(np.int64),
        "charges": np.asarray(atoms.get_initial_charges(), dtype=np.float64),
        "src": np.asarray(src, dtype=np.int64), "dst": np.asarray(dst, dtype=np.int64),
        "shift": unit_shift @ cell, "unit_shift": unit_shift, "cell": cell[None],
    }
    if "energy" in atoms.info or "forces" in atoms.arrays:  # a missing one of the two: NaN
        item["energy"] = np.array([float(atoms.info.get("energy", np.nan))])
        item["forces"] = (np.asarray(atoms.arrays["forces"], dtype=np.float64)
                          if "forces" in atoms.arrays else np.full((len(atoms), 3), np.nan))
    if "stress" in atoms.info and atoms.pbc.all():
        item["stress"] = full_stress(atoms.info["stress"])[None]
    return item


def collate(items: list[dict[str, np.ndarray]], dtype: torch.dtype = torch.float32) -> GraphBatch:
    counts = np.array([len(it["numbers"]) for it in items])
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    cat = lambda key: np.concatenate([it[key] for it in items])  # noqa: E731
    f = lambda a: torch.as_tensor(a, dtype=dtype)  # noqa: E731
    i = lambda a: torch.as_tensor(a, dtype=torch.long)  # noqa: E731
    labelled = all("energy" in it and "forces" in it for it in items)
    stressed = labelled and any("stress" in it for it in items)
    nan = np.full((1, 3, 3), np.nan)
    energy_labelled = forces_labelled = None
    if labelled:
        e_ok = np.isfinite(cat("energy"))
        f_ok = np.isfinite(cat("forces")).all(axis=1)
        if not e_ok.all() or not f_ok.all():
            energy_labelled, forces_labelled = torch.as_tensor(e_ok), torch.as_tensor(f_ok)
    return GraphBatch(
        positions=f(cat("positions")), numbers=i(cat("numbers")), charges=f(cat("charges")),
        structure=i(np.repeat(np.arange(len(items)), counts)),
        src=i(np.concatenate([it["src"] + o for it, o in zip(items, offsets, strict=True)])),
        dst=i(np.concatenate([it["dst"] + o for it, o in zip(items, offsets, strict=True)])),
        shift=f(cat("shift")), n_atoms=i(counts),
        cell=f(cat("cell")), unit_shift=f(cat("unit_shift")),
        energy=f(cat("energy")) if labelled else None,
        forces=f(cat("forces")) if labelled else None,
        stress=f(np.concatenate([it.get("stress", nan) for it in items])) if stressed else None,
        extras=[it["extra"] for it in items] if "extra" in items[0] else None,
        energy_labelled=energy_labelled, forces_labelled=forces_labelled,
    )


def at_energy_labels(batch: GraphBatch, *values: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Each of ``values`` ([..., n_structures]) at the structures with an energy label (all
    of it when the batch is completely labelled). Select before any nonlinear step of a
    loss: the NaN that stands for a missing label must reach neither value nor gradient."""
    if batch.energy_labelled is None:
        return values
    return tuple(v[..., batch.energy_labelled] for v in values)


def at_force_labels(batch: GraphBatch, *values: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Each of ``values`` ([..., n_atoms, 3]) at the atoms with a force label (see
    `at_energy_labels`)."""
    if batch.forces_labelled is None:
        return values
    return tuple(v[..., batch.forces_labelled, :] for v in values)


def structure_sum(batch: GraphBatch, values: torch.Tensor) -> torch.Tensor:
    """Per-atom ``values`` [n_atoms, k] summed over each structure's atoms
    [n_structures, k]."""
    return torch.zeros(batch.n_structures, values.shape[-1], dtype=values.dtype,
                       device=values.device).index_add_(0, batch.structure, values)


def mean_or_zero(values: torch.Tensor) -> torch.Tensor:
    """The mean, or zero (keeping the graph) when a batch has no label of this kind."""
    return values.mean() if values.numel() else values.sum()
