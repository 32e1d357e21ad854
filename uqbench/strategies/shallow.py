"""Shallow ensembles (Kellner & Ceriotti 2024): one backbone, K readout heads.

After an MSE warm start of the backbone (``warm_start_fraction`` of the budget, its own
readout), its readout is copied into ``n_heads`` heads, each copy's last layer perturbed
(Gaussian noise of ``head_noise`` x the layer's weight RMS) so the heads start apart. Head k
gives a whole potential: E_k is the backbone's energy with head k as its readout (the
adapter's `pool_readout` and `energy_from_readout`; on EGNN E_k = sum_i (energy_scale x
head_k(h_i) + energy_shift)), F_k = -grad E_k. Backbone and heads then minimise the
Gaussian NLL of the ensemble, mean and variance over the heads, of the energy per atom and
of the force components (as Kellner & Ceriotti's NLL training of the last-layer ensemble;
forces from each head by autograd). At prediction the K heads are K samples.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from uqbench.backbones.adapter import BackboneWrapper
from uqbench.backbones.graph import at_energy_labels, at_force_labels, mean_or_zero
from uqbench.params import Interval
from uqbench.strategies.base import WarmStarted
from uqbench.strategies.mve import VARIANCE_FLOOR, gaussian_nll


class ShallowHeads(BackboneWrapper):
    """A backbone with K copies of its readout on its final atom states."""

    def __init__(self, backbone: nn.Module, adapter, n_heads: int, noise: float) -> None:
        super().__init__()
        if getattr(backbone, "direct_forces", False):
            raise ValueError("a shallow ensemble's heads are potentials (forces -grad E): it "
                             "needs a conservative backbone, not a direct-force one")
        self.backbone = backbone
        self._adapter = adapter
        readout = adapter.readout(backbone)
        self.heads = nn.ModuleList(copy.deepcopy(readout) for _ in range(n_heads))
        with torch.no_grad():
            for head in self.heads:
                last = [m for m in head.modules() if isinstance(m, nn.Linear)][-1]
                rms = last.weight.pow(2).mean().sqrt().clamp_min(1e-3)
                last.weight.add_(noise * rms * torch.randn_like(last.weight))

    def head_energies(self, batch, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Energies of every head [K, n_structures] (eV)."""
        if positions is not None:
            batch = _with_positions(batch, positions)
        adapter, backbone = self._adapter, self.backbone
        h = adapter.node_features(backbone, batch)
        return torch.stack([
            adapter.energy_from_readout(
                backbone, batch, adapter.pool_readout(backbone, batch, h, head).squeeze(-1))
            for head in self.heads])

    def forward(self, batch) -> torch.Tensor:
        """The ensemble's mean energy [n_structures]."""
        return self.head_energies(batch).mean(0)

    def energies_and_forces(self, batch, create_graph: bool = False):
        """Energies [K, n] and forces [K, n_atoms, 3] of every head, each -grad of its own
        energy."""
        with torch.enable_grad():
            positions = batch.positions.detach().requires_grad_(True)
            energies = self.head_energies(batch, positions)
            forces = torch.stack([
                -torch.autograd.grad(energies[k].sum(), positions, create_graph=create_graph,
                                     retain_graph=True)[0]
                for k in range(energies.shape[0])])
        return energies, forces


def _with_positions(batch, positions):
    from dataclasses import replace

    return replace(batch, positions=positions)


class ShallowEnsemble(WarmStarted):
    """Shallow-ensemble-<backbone>: K readout heads on one backbone, NLL of their spread."""

    parameter_constraints = {
        "n_heads": Interval(int, 2),
        "warm_start_fraction": Interval(float, 0, 1, closed="neither"),  # heads need it
        "head_noise": Interval(float, 0),
    }

    def __init__(self, n_heads: int = 8, head_noise: float = 0.1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.n_heads = n_heads
        self.head_noise = head_noise

    def wrap(self, backbone: nn.Module) -> nn.Module:
        return ShallowHeads(backbone, self.adapter, self.n_heads, self.head_noise)

    def fit_member(self, member, train_items, val_items):
        return self.fit_warm_then(member, train_items, val_items, "nll", self.nll_loss,
                                  "heads NLL")

    def nll_loss(self, model: ShallowHeads, batch) -> torch.Tensor:
        """Gaussian NLL of the heads' mean and variance: energy per atom + force_weight x
        force components, each averaged over the labels present (loss units)."""
        e, f = model.energies_and_forces(batch, create_graph=model.training)
        scale = model.energy_scale
        e = e / batch.n_atoms / scale
        f = f / scale
        e_mean, e_var = e.mean(0), e.var(0, unbiased=False) + VARIANCE_FLOOR
        f_mean, f_var = f.mean(0), f.var(0, unbiased=False) + VARIANCE_FLOOR
        e_err, e_var = at_energy_labels(batch, e_mean - batch.energy / batch.n_atoms / scale,
                                        e_var)
        f_err, f_var = at_force_labels(batch, f_mean - batch.forces / scale, f_var)
        return (mean_or_zero(gaussian_nll(e_err, e_var))
                + self.force_weight * mean_or_zero(gaussian_nll(f_err, f_var)))

    def copies_per_pass(self, n_samples: int) -> int:
        return self.n_heads

    def sample(self, batch, n_samples: int):
        """The K heads' energies and forces (``n_samples`` does not apply: K is fixed)."""
        e, f = self.models_[0].energies_and_forces(batch)
        return e.detach(), f.detach()
