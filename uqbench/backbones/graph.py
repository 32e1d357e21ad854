"""Batched graphs of atomic structures: nodes, edges with periodic shifts, and labels."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from ase import Atoms
from ase.neighborlist import neighbor_list

from uqbench.neighbours import periodic_pairs


@dataclass
class GraphBatch:
    """Structures concatenated into one graph; edges point from ``src`` to ``dst``.

    The vector of edge e is ``positions[src] - positions[dst] + shift[e]``; ``shift`` holds
    the Cartesian periodic-image offsets (zero for molecules).
    """

    positions: torch.Tensor  # [n_atoms, 3]
    numbers: torch.Tensor  # [n_atoms] atomic numbers
    charges: torch.Tensor  # [n_atoms]
    structure: torch.Tensor  # [n_atoms] structure index of each atom
    src: torch.Tensor  # [n_edges]
    dst: torch.Tensor  # [n_edges]
    shift: torch.Tensor  # [n_edges, 3]
    n_atoms: torch.Tensor  # [n_structures]
    energy: torch.Tensor | None = None  # [n_structures]
    forces: torch.Tensor | None = None  # [n_atoms, 3]

    @property
    def n_structures(self) -> int:
        return int(self.n_atoms.shape[0])

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> GraphBatch:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            if t is None:
                return None
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
            energy=tile(self.energy), forces=tile(self.forces),
        )


def graph_item(atoms: Atoms, cutoff: float | None) -> dict[str, np.ndarray]:
    """One structure's graph: all pairs when ``cutoff`` is None (no periodicity allowed),
    else every neighbour (periodic images included) within ``cutoff``."""
    n = len(atoms)
    if cutoff is None:
        if atoms.pbc.any():
            raise ValueError("a periodic structure needs a finite cutoff")
        src, dst = np.nonzero(~np.eye(n, dtype=bool))
        shift = np.zeros((src.size, 3))
    else:
        # D = positions[j] - positions[i] + S @ cell; here src=j, dst=i.
        if atoms.pbc.all():
            dst, src, shift_int = periodic_pairs(atoms.positions, atoms.cell.array, cutoff)
        else:
            dst, src, shift_int = neighbor_list("ijS", atoms, cutoff)
        shift = shift_int @ np.asarray(atoms.cell)
    item = {
        "positions": np.asarray(atoms.positions, dtype=np.float64),
        "numbers": atoms.numbers.astype(np.int64),
        "charges": np.asarray(atoms.get_initial_charges(), dtype=np.float64),
        "src": src.astype(np.int64), "dst": dst.astype(np.int64), "shift": shift,
    }
    if "energy" in atoms.info:
        item["energy"] = np.array([float(atoms.info["energy"])])
    if "forces" in atoms.arrays:
        item["forces"] = np.asarray(atoms.arrays["forces"], dtype=np.float64)
    return item


def collate(items: list[dict[str, np.ndarray]], dtype: torch.dtype = torch.float32) -> GraphBatch:
    counts = np.array([len(it["numbers"]) for it in items])
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    cat = lambda key: np.concatenate([it[key] for it in items])  # noqa: E731
    f = lambda a: torch.as_tensor(a, dtype=dtype)  # noqa: E731
    i = lambda a: torch.as_tensor(a, dtype=torch.long)  # noqa: E731
    labelled = all("energy" in it and "forces" in it for it in items)
    return GraphBatch(
        positions=f(cat("positions")), numbers=i(cat("numbers")), charges=f(cat("charges")),
        structure=i(np.repeat(np.arange(len(items)), counts)),
        src=i(np.concatenate([it["src"] + o for it, o in zip(items, offsets, strict=True)])),
        dst=i(np.concatenate([it["dst"] + o for it, o in zip(items, offsets, strict=True)])),
        shift=f(cat("shift")), n_atoms=i(counts),
        energy=f(cat("energy")) if labelled else None,
        forces=f(cat("forces")) if labelled else None,
    )
