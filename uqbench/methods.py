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


# -- foundation backbones: one factory maker, since only the backbone and defaults differ --

#: Finetuning defaults shared by every strategy on a pretrained backbone (the full-size
#: configuration, meant for a GPU); the P strategy finetunes the pretrained weights with the
#: CRPS directly (no MSE stage: the backbone is already trained). lr 1e-3 as in CHGNet's own
#: finetuning example; lower rates leave the zero-initialised perturbation maps near zero
#: within a CPU budget of a few epochs.
FOUNDATION_DEFAULTS: dict[str, Any] = {
    "lr": 1e-3, "max_epochs": 50, "patience": 10, "batch_size": 8,
}
STRATEGY_DEFAULTS: dict[str, dict[str, Any]] = {
    # An MSE warm start on the new data, then the almost-fair CRPS at a lower rate: the CRPS
    # straight from the pretrained weights at 1e-3 gave samples up to 137 eV/atom off.
    "perturbation": {"pretrain": True, "finetune_epochs": 50, "finetune_lr": 3e-4,
                     "finetune_fraction": 0.5},
    "blip": {},
    "ensemble": {},
    "mcdropout": {},
    "deterministic": {},
}
#: ``--quick`` on a pretrained backbone: one epoch, few samples, and a tiny dataset.
FOUNDATION_QUICK: dict[str, Any] = {
    "max_epochs": 1, "patience": 1, "batch_size": 4, "n_samples": 4,
}
STRATEGY_QUICK: dict[str, dict[str, Any]] = {
    "perturbation": {"finetune_epochs": 1},
    "blip": {},
    "ensemble": {"n_members": 2},
    "mcdropout": {},
    "deterministic": {},
}
FOUNDATION_QUICK_DATA: dict[str, Any] = {"train_size": 8, "val_size": 4, "test_size": 8,
                                         "ood_size": 4}
_STRATEGIES = {
    "perturbation": "uqbench.strategies.perturbation:FunctionalPerturbation",
    "blip": "uqbench.strategies.blip:BLIP",
    "ensemble": "uqbench.strategies.ensemble:DeepEnsemble",
    "mcdropout": "uqbench.strategies.mcdropout:MCDropout",
    "deterministic": "uqbench.strategies.deterministic:Deterministic",
}


def _foundation(strategy: str, backbone: str, doc: str):
    def create(**hyperparameters: Any):
        import importlib

        module, cls = _STRATEGIES[strategy].split(":")
        klass = getattr(importlib.import_module(module), cls)
        params = {**FOUNDATION_DEFAULTS, **STRATEGY_DEFAULTS[strategy], **hyperparameters}
        method = klass(backbone=backbone, **params)
        method.quick_params = {**FOUNDATION_QUICK, **STRATEGY_QUICK[strategy]}
        method.quick_data = dict(FOUNDATION_QUICK_DATA)
        return method

    create.__doc__ = doc
    return create


p_chgnet = _foundation("perturbation", "chgnet", "P-CHGNet: pretrained CHGNet with learned "
                       "functional perturbations, finetuned with the fair CRPS.")
blip_chgnet = _foundation("blip", "chgnet", "BLIP-CHGNet: adaptive variational dropout on "
                          "pretrained CHGNet's atom convolutions.")
ensemble_chgnet = _foundation("ensemble", "chgnet", "Ensemble of 5 CHGNets finetuned from the "
                              "pretrained weights (each redraws its last readout layer).")
mcdropout_chgnet = _foundation("mcdropout", "chgnet", "MC dropout on pretrained CHGNet "
                               "(p = 0.1 in its MLPs, finetuned).")
chgnet = _foundation("deterministic", "chgnet", "CHGNet finetuned from its pretrained "
                     "weights with the MSE loss: the accuracy reference (no uncertainty).")
orb = _foundation("deterministic", "orb", "Orb-v3 finetuned with the MSE loss: the accuracy "
                  "reference (no uncertainty).")
p_orb = _foundation("perturbation", "orb", "P-Orb: Orb-v3 with learned functional "
                    "perturbations, finetuned with the fair CRPS.")
blip_orb = _foundation("blip", "orb", "BLIP-Orb: adaptive variational dropout on Orb-v3's "
                       "message and update MLPs.")
ensemble_orb = _foundation("ensemble", "orb", "Ensemble of 5 Orb-v3s finetuned from one "
                           "checkpoint (each redraws its last readout layer).")
mcdropout_orb = _foundation("mcdropout", "orb", "MC dropout on Orb-v3 (p = 0.1 after every "
                            "MLP hidden layer, finetuned).")
