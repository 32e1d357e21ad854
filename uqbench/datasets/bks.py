"""BKS silica (van Beest, Kramer, van Santen 1990) with a short-range repulsive correction
and Wolf-truncated Coulomb, as an ASE calculator. The ground truth of ``silica-bks``.

V_ij(r) = k q_i q_j / r + A_ij exp(-b_ij r) - C_ij / r^6 + 4 eps_ij [(s_ij/r)^24 - (s_ij/r)^6]

with q_Si = +2.4, q_O = -1.2, BKS's Si-O and O-O parameters (no Si-Si short-range term) and
the 24-6 term of Saika-Voivod et al. (PRE 70, 061507, 2004), which keeps Si-O and O-O from
collapsing at high temperature. Every pair term is shifted-force truncated at r_c = 10 Å,
V_sf(r) = V(r) - V(r_c) - (r - r_c) V'(r_c). The Coulomb term is Wolf-summed: damped,
erfc(alpha r) / r with alpha = 0.2 1/Å, shifted-force at r_c, plus the Wolf self term
-k (erfc(alpha r_c) / (2 r_c) + alpha / sqrt(pi)) sum_i q_i^2 (Wolf et al. 1999; Fennell &
Gezelter 2006). Carré et al. (JCP 2007) found Wolf truncation at r_c ~ 10 Å to agree well
with Ewald for BKS silica; the tests compare with matscipy's Ewald. Energy and forces are
continuous at r_c, so MD conserves energy. Stress (periodic cells) is the strain derivative
(1/V) dE/d(strain) in ASE's convention and Voigt order.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.neighborlist import neighbor_list
from scipy.special import erfc

from uqbench.dataset import VOIGT
from uqbench.neighbours import periodic_pairs

COULOMB = 14.399645  # e^2 / (4 pi eps0) in eV Å
CHARGES = {14: 2.4, 8: -1.2}
# (A eV, b 1/Å, C eV Å^6) from BKS; (eps eV, sigma Å) from Saika-Voivod et al. 2004.
BKS = {(8, 14): (18003.7572, 4.87318, 133.5381), (8, 8): (1388.7730, 2.76, 175.0)}
REPULSION = {(8, 14): (1.051e-3, 1.779239), (8, 8): (3.098e-3, 1.313635)}
R_CUT = 10.0
DAMPING = 0.2  # 1/Å: Wolf damping (Fennell & Gezelter's damped shifted force)


def _pair_table(repulsion: bool) -> dict[tuple[int, int], np.ndarray]:
    table = {}
    for zi in (8, 14):
        for zj in (8, 14):
            key = (min(zi, zj), max(zi, zj))
            a, b, c = BKS.get(key, (0.0, 1.0, 0.0))
            eps, sig = REPULSION.get(key, (0.0, 0.0)) if repulsion else (0.0, 0.0)
            table[(zi, zj)] = np.array([COULOMB * CHARGES[zi] * CHARGES[zj], a, b, c,
                                        4.0 * eps, sig * sig])
    return table


def pair_energy_derivative(r: np.ndarray, kqq, a, b, c, eps4, sig2,
                           damping: float = DAMPING):
    """V(r) and dV/dr per pair; parameters per pair (arrays) or scalars; eps4 = 4 eps and
    sig2 = sigma^2; the Coulomb term is damped, erfc(damping r) / r."""
    inv = 1.0 / r
    inv2 = inv * inv
    inv6 = inv2 * inv2 * inv2
    s6 = (sig2 * inv2) ** 3
    s24 = (s6 * s6) * (s6 * s6)
    expo = a * np.exp(-b * r)
    ec = erfc(damping * r)
    gauss = 2.0 * damping / np.sqrt(np.pi) * np.exp(-((damping * r) ** 2))
    v = kqq * ec * inv + expo - c * inv6 + eps4 * (s24 - s6)
    dv = (-kqq * (ec * inv + gauss) * inv - b * expo
          + (6.0 * c * inv6 + eps4 * (6.0 * s6 - 24.0 * s24)) * inv)
    return v, dv


class BKSCalculator(Calculator):
    """BKS + 24-6 repulsion + Wolf Coulomb, shifted-force at ``cutoff`` (Å).

    ``repulsion=False`` gives plain BKS (for comparisons). The neighbour list is rebuilt
    only when an atom has moved more than half of ``skin`` or the cell has changed.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, cutoff: float = R_CUT, repulsion: bool = True, skin: float = 1.0,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.cutoff = cutoff
        self.repulsion = repulsion
        self.skin = skin
        self._table = _pair_table(repulsion)
        self._nl = None

    def _neighbours(self, atoms: Atoms):
        nl = self._nl
        stale = (nl is None or len(atoms) != len(nl["ref"])
                 or not np.allclose(atoms.cell.array, nl["cell"])
                 or not np.array_equal(atoms.numbers, nl["numbers"]))
        if not stale:
            moved = np.linalg.norm(atoms.positions - nl["ref"], axis=1).max()
            stale = moved > 0.5 * self.skin
        if stale:
            if atoms.pbc.all():
                i, j, shift = periodic_pairs(atoms.positions, atoms.cell.array,
                                             self.cutoff + self.skin)
            else:
                i, j, shift = neighbor_list("ijS", atoms, self.cutoff + self.skin)
            z = atoms.numbers
            if not set(np.unique(z)) <= set(CHARGES):
                raise ValueError("BKSCalculator knows only Si and O")
            params = np.empty((6, i.size))
            for (zi, zj), row in self._table.items():
                params[:, (z[i] == zi) & (z[j] == zj)] = row[:, None]
            v_c, dv_c = pair_energy_derivative(np.full(i.size, self.cutoff), *params)
            self._nl = nl = {"i": i, "j": j, "shift": shift,
                             "params": params, "v_c": v_c, "dv_c": dv_c,
                             "self_energy": -COULOMB * (
                                 erfc(DAMPING * self.cutoff) / (2.0 * self.cutoff)
                                 + DAMPING / np.sqrt(np.pi)) * sum(
                                 CHARGES[int(zz)] ** 2 for zz in z),
                             "ref": atoms.positions.copy(), "cell": atoms.cell.array.copy(),
                             "numbers": atoms.numbers.copy()}
        return nl

    def calculate(self, atoms: Atoms | None = None, properties=("energy",),
                  system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        nl = self._neighbours(self.atoms)
        pos = self.atoms.positions
        # Offsets from the current cell: a strain too small to rebuild the list still counts.
        d = pos[nl["j"]] - pos[nl["i"]] + nl["shift"] @ self.atoms.cell.array
        r = np.sqrt(np.einsum("ij,ij->i", d, d))
        inside = r < self.cutoff  # pairs in the skin contribute exactly zero
        v, dv = pair_energy_derivative(r, *nl["params"])
        v_sf = np.where(inside, v - nl["v_c"] - (r - self.cutoff) * nl["dv_c"], 0.0)
        dv_sf = np.where(inside, dv - nl["dv_c"], 0.0)
        # Every pair appears as (i, j) and (j, i); the Wolf self term makes energies
        # comparable with Ewald (it is constant for a composition).
        energy = 0.5 * v_sf.sum() + nl["self_energy"]
        pair_f = (dv_sf / r)[:, None] * d
        n = len(pos)
        forces = np.stack([np.bincount(nl["i"], weights=pair_f[:, k], minlength=n)
                           for k in range(3)], axis=1)
        self.results = {"energy": float(energy), "free_energy": float(energy), "forces": forces}
        if self.atoms.pbc.all():
            # dE/d(strain)_ab = 1/2 sum_pairs V'(r) d_a d_b / r (each pair counted twice).
            virial = 0.5 * np.einsum("p,pa,pb->ab", dv_sf / r, d, d)
            full = virial / self.atoms.get_volume()
            self.results["stress"] = full[VOIGT]
