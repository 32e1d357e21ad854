"""Neighbour search for small periodic cells with long cutoffs."""

from __future__ import annotations

import numpy as np


def periodic_pairs(positions: np.ndarray, cell: np.ndarray, cutoff: float):
    """Ordered pairs (i, j, S) with |x_j - x_i + S @ cell| < cutoff, i != j or S != 0.

    A vectorised search over the periodic images that can reach the cutoff; for the small
    cells of silica-bks it is far faster than ``ase.neighborlist.neighbor_list`` with a
    10 Å cutoff. Positions need not be wrapped.
    """
    inv = np.linalg.inv(cell)
    frac = positions @ inv
    wrap = np.floor(frac)
    x = positions - wrap @ cell
    reach = np.floor(cutoff * np.linalg.norm(inv, axis=0) + 1.0).astype(int)
    grid = np.stack(np.meshgrid(*[np.arange(-n, n + 1) for n in reach], indexing="ij"),
                    axis=-1).reshape(-1, 3)
    n = len(positions)
    diff = x[None, :, :] - x[:, None, :]  # [i, j] = x_j - x_i
    out_i, out_j, out_s = [], [], []
    cut2 = cutoff * cutoff
    for shift in grid:
        d = diff + shift @ cell
        close = np.einsum("ijk,ijk->ij", d, d) < cut2
        if not shift.any():
            close[np.arange(n), np.arange(n)] = False
        i, j = np.nonzero(close)
        out_i.append(i)
        out_j.append(j)
        out_s.append(np.broadcast_to(shift, (i.size, 3)))
    i, j = np.concatenate(out_i), np.concatenate(out_j)
    s = np.concatenate(out_s) - wrap[j] + wrap[i]
    return i, j, s.astype(int)
