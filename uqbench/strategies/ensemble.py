"""Deep ensemble (Lakshminarayanan et al. 2017): M independently initialised and trained
backbones; each member is one sample of the predictive distribution."""

from __future__ import annotations

import torch

from uqbench.params import Interval
from uqbench.strategies.base import TorchUQMethod


class DeepEnsemble(TorchUQMethod):
    """Deep ensemble of M backbones differing in initialisation and minibatch order."""

    parameter_constraints = {"n_members": Interval(int, 2)}
    stack_members = True  # M plain backbones with the MSE loss: trained as one computation

    def __init__(self, n_members: int = 5, **kwargs) -> None:
        super().__init__(**kwargs)
        self.n_members = n_members

    def n_models(self) -> int:
        if self.n_members < 2:
            raise ValueError("an ensemble needs n_members >= 2")
        return self.n_members

    def sample(self, batch, n_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
        # An ensemble's samples are its members: n_samples does not apply.
        passes = [self.member_passes(m, batch, 1) for m in self.models_]
        return torch.cat([e for e, _ in passes]), torch.cat([f for _, f in passes])
