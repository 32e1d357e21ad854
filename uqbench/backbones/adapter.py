"""The adapter through which a UQ strategy reaches a backbone: build, graph, fit scales."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from ase import Atoms
from torch import nn

from uqbench.backbones.graph import graph_item


@dataclass
class BackboneAdapter:
    """What strategies need from a backbone. ``options`` are the backbone's keywords."""

    name: str
    options: dict[str, Any]

    def build(self) -> nn.Module:
        if self.name == "egnn":
            from uqbench.backbones.egnn import EGNN

            return EGNN(**self.options)
        raise ValueError(f"unknown backbone {self.name!r}")

    def graph_items(self, structures: list[Atoms]) -> list[dict[str, np.ndarray]]:
        cutoff = self.options.get("cutoff")
        return [graph_item(a, cutoff) for a in structures]

    def fit_normalisation(self, model: nn.Module, items: list[dict[str, np.ndarray]]) -> None:
        """Per-atom energy shift (mean) and scale (RMS of force components) from labels."""
        e_per_atom = np.array([it["energy"][0] / len(it["numbers"]) for it in items])
        f = np.concatenate([it["forces"].ravel() for it in items])
        scale = float(np.sqrt(np.mean(f**2))) or float(np.std(e_per_atom)) or 1.0
        model.energy_shift.fill_(float(e_per_atom.mean()))
        model.energy_scale.fill_(scale)

    @staticmethod
    def norm_layers(model: nn.Module) -> list[nn.LayerNorm]:
        return [m for m in model.modules() if isinstance(m, nn.LayerNorm)]

    @staticmethod
    def dropout_layers(model: nn.Module) -> list[nn.Dropout]:
        return [m for m in model.modules() if isinstance(m, nn.Dropout)]


def energy_and_forces(model: nn.Module, batch, create_graph: bool = False):
    """Energies [n_structures] and forces -dE/dx [n_atoms, 3] of a conservative model."""
    with torch.enable_grad():
        positions = batch.positions.detach().requires_grad_(True)
        energy = model(replace(batch, positions=positions))
        (grad,) = torch.autograd.grad(energy.sum(), positions, create_graph=create_graph)
    return energy, -grad
