"""Small torch building blocks shared by backbones."""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Sequential):
    """Linear -> LayerNorm -> SiLU -> Dropout -> Linear (-> SiLU).

    The LayerNorm is the hook the perturbation strategy conditions; the Dropout is the one
    MC dropout keeps on at prediction (p = 0 leaves the network deterministic).
    """

    def __init__(self, d_in: int, d_hidden: int, d_out: int, dropout: float = 0.0,
                 final_activation: bool = False) -> None:
        layers: list[nn.Module] = [
            nn.Linear(d_in, d_hidden), nn.LayerNorm(d_hidden), nn.SiLU(), nn.Dropout(dropout),
            nn.Linear(d_hidden, d_out),
        ]
        if final_activation:
            layers.append(nn.SiLU())
        super().__init__(*layers)


class GaussianRBF(nn.Module):
    """Gaussian radial basis on [0, r_max] with spacing-wide Gaussians."""

    def __init__(self, n: int, r_max: float) -> None:
        super().__init__()
        self.register_buffer("centers", torch.linspace(0.0, r_max, n))
        self.width = r_max / max(n - 1, 1)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        return torch.exp(-(((r[:, None] - self.centers) / self.width) ** 2))


def cosine_envelope(r: torch.Tensor, cutoff: float | None) -> torch.Tensor | None:
    """Smoothly takes messages to zero at the cutoff, so energies stay continuous; None
    without a cutoff (every message counts in full: no multiplication by one to pay for,
    forward and backward)."""
    if cutoff is None:
        return None
    return torch.where(r < cutoff, 0.5 * (torch.cos(torch.pi * r / cutoff) + 1.0),
                       torch.zeros_like(r))
