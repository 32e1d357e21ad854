"""A deterministic backbone: the accuracy reference, with no uncertainty (std = 0)."""

from __future__ import annotations

import torch

from uqbench.strategies.base import TorchUQMethod


class Deterministic(TorchUQMethod):
    """One backbone trained with the MSE loss; its single prediction is the only sample.

    Scores that need a spread are degenerate by design: CRPS becomes the mean absolute
    error, NLL is infinite (counted in ``n_zero_std``).
    """

    stack_members = True  # a plain backbone with the MSE loss: seeds can train stacked

    def sample(self, batch, n_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.member_passes(self.models_[0], batch, 1)
