"""Extra heads on a backbone's final atom states: the wrapper MVE and evidential
regression share (each head an MLP F -> width -> n_out, sized at the first call)."""

from __future__ import annotations

import torch
from torch import nn

from uqbench.backbones.adapter import BackboneWrapper


class AtomHeads(BackboneWrapper):
    """A backbone (its energy and forces unchanged) with an energy head and a force head
    reading its final atom states through ``features`` (the adapter's node_features)."""

    def __init__(self, backbone: nn.Module, features, width: int, n_out: int) -> None:
        super().__init__()
        self.backbone = backbone
        self._features = features  # (model, batch) -> [n_atoms, F]: the adapter's hook
        self.energy_head = nn.Sequential(nn.LazyLinear(width), nn.SiLU(), nn.LazyLinear(n_out))
        self.force_head = nn.Sequential(nn.LazyLinear(width), nn.SiLU(), nn.LazyLinear(n_out))

    def forward(self, batch, **kwargs) -> torch.Tensor:
        return self.backbone(batch, **kwargs)

    def atom_states(self, batch) -> torch.Tensor:
        return self._features(self.backbone, batch)

    def materialise(self, batch) -> None:
        """Give the lazy heads their input size (before an optimiser sees them)."""
        with torch.no_grad():
            h = self.atom_states(batch)
            self.energy_head(h[:1])
            self.force_head(h[:1])
