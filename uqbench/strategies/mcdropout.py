"""MC dropout (Gal & Ghahramani 2016): dropout stays on at prediction; S stochastic passes."""

from __future__ import annotations

import torch

from uqbench.params import Interval
from uqbench.strategies.base import TorchUQMethod


class MCDropout(TorchUQMethod):
    """One backbone with dropout p in every MLP, sampled S times with dropout active.

    The S passes run as one replicated batch: dropout draws an independent mask for every
    row, so each replica is an independent dropout sample.
    """

    parameter_constraints = {"dropout": Interval(float, 0, 1, closed="neither")}
    # one plain backbone with the MSE loss: seeds can train stacked (each model draws its
    # own dropout masks, from another random stream than when trained alone)
    stack_members = True

    def __init__(self, dropout: float = 0.1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.dropout = dropout

    def backbone_settings(self) -> dict:
        if not 0.0 < self.dropout < 1.0:
            raise ValueError(f"dropout must be in (0, 1); got {self.dropout}")
        return {**super().backbone_settings(), "dropout": self.dropout}

    def copies_per_pass(self, n_samples: int) -> int:
        return n_samples

    def sample(self, batch, n_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
        model = self.models_[0]
        for layer in self.adapter.dropout_layers(model):
            layer.train()
        try:
            return self.member_passes(model, batch, n_samples)
        finally:
            model.eval()
