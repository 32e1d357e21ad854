"""The adapter through which a UQ strategy reaches a backbone: build, graph, fit scales."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from ase import Atoms
from torch import nn

from uqbench.backbones.graph import graph_item

PERIODIC_CUTOFF = 5.0  # Å: EGNN's default cutoff for periodic structures


@dataclass
class Site:
    """A submodule slot ``getattr(parent, name)`` and the rows it sees (atom or edge)."""

    parent: nn.Module
    name: str
    domain: str

    def get(self) -> nn.Module:
        return self.parent._modules[self.name]

    def set(self, module: nn.Module) -> None:
        self.parent._modules[self.name] = module


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

    def resolve(self, structures: list[Atoms]) -> dict[str, Any]:
        """Fill options that depend on the data; returns the options now in force.

        EGNN without a cutoff connects all pairs, which periodic cells cannot have: there
        the cutoff defaults to `PERIODIC_CUTOFF`.
        """
        if (self.name == "egnn" and self.options.get("cutoff") is None
                and any(a.pbc.any() for a in structures)):
            self.options = {**self.options, "cutoff": PERIODIC_CUTOFF}
        return dict(self.options)

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

    def norm_sites(self, model: nn.Module) -> list[Site]:
        """Every normalisation layer, with the domain (atom or edge rows) it normalises."""
        if self.name == "egnn":
            sites = []
            for layer in model.layers:
                sites.append(Site(layer.message, "1", "edge"))
                sites.append(Site(layer.update, "1", "atom"))
            sites.append(Site(model.readout, "1", "atom"))
            return sites
        raise ValueError(f"backbone {self.name!r} exposes no normalisation layers")

    def message_update_sites(self, model: nn.Module) -> list[tuple[str, str, list[Site]]]:
        """The linear layers of each message and update function: (group, domain, sites)."""
        if self.name == "egnn":
            groups = []
            for k, layer in enumerate(model.layers):
                for fn, domain in ((layer.message, "edge"), (layer.update, "atom")):
                    linears = [Site(fn, str(i), domain) for i, m in enumerate(fn)
                               if isinstance(m, nn.Linear)]
                    groups.append((f"layer{k}.{'message' if domain == 'edge' else 'update'}",
                                   domain, linears))
            return groups
        raise ValueError(f"backbone {self.name!r} exposes no message/update functions")

    def invariant_inputs(self, model: nn.Module, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Initial node features and edge attributes (what BLIP's inference net sees)."""
        h, edge_feat, _ = model.features(batch)
        return h, edge_feat

    def invariant_dims(self, model: nn.Module) -> tuple[int, int]:
        """Widths of the node features and edge attributes of `invariant_inputs`."""
        if self.name == "egnn":
            return model.embed.embedding_dim, model.rbf.centers.numel() + 2
        raise ValueError(f"backbone {self.name!r} exposes no invariant inputs")

    @staticmethod
    def edge_structure(batch) -> torch.Tensor:
        return batch.structure[batch.dst]

    @staticmethod
    def dropout_layers(model: nn.Module) -> list[nn.Dropout]:
        return [m for m in model.modules() if isinstance(m, nn.Dropout)]


def energy_and_forces(model: nn.Module, batch, create_graph: bool = False, **model_kwargs):
    """Energies [n_structures] and forces -dE/dx [n_atoms, 3] of a conservative model."""
    with torch.enable_grad():
        positions = batch.positions.detach().requires_grad_(True)
        energy = model(replace(batch, positions=positions), **model_kwargs)
        (grad,) = torch.autograd.grad(energy.sum(), positions, create_graph=create_graph)
    return energy, -grad
