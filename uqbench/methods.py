"""Built-in method factories, registered as ``uqbench.methods`` entry points.

Each factory imports its strategy only when called, so listing methods imports no torch.
Method keys are ``<strategy>-<backbone>``.
"""

from __future__ import annotations

from typing import Any


def ensemble_egnn(**hyperparameters: Any):
    """Deep ensemble of M = 5 EGNNs (independent initialisations)."""
    from uqbench.strategies.ensemble import DeepEnsemble

    return DeepEnsemble(backbone="egnn", **hyperparameters)


def mcdropout_egnn(**hyperparameters: Any):
    """MC dropout EGNN (p = 0.1 in every MLP, S = 32 passes at prediction)."""
    from uqbench.strategies.mcdropout import MCDropout

    return MCDropout(backbone="egnn", **hyperparameters)
