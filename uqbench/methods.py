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


def p_egnn(**hyperparameters: Any):
    """P-EGNN: EGNN with learned functional perturbations, finetuned with the fair CRPS."""
    from uqbench.strategies.perturbation import FunctionalPerturbation

    return FunctionalPerturbation(backbone="egnn", **hyperparameters)


def blip_egnn(**hyperparameters: Any):
    """BLIP-EGNN: adaptive variational dropout on EGNN's message and update functions."""
    from uqbench.strategies.blip import BLIP

    return BLIP(backbone="egnn", **hyperparameters)


def egnn(**hyperparameters: Any):
    """Deterministic EGNN: the accuracy reference (one prediction, no uncertainty)."""
    from uqbench.strategies.deterministic import Deterministic

    return Deterministic(backbone="egnn", **hyperparameters)
