"""Deep evidential regression: a Normal-Inverse-Gamma (NIG) head on the backbone's final
atom states, trained with the evidential loss after an MSE warm start.

Amini, Schwarting, Soleimany & Rus (2020): the target y ~ N(mu, sigma^2) with the prior
mu ~ N(gamma, sigma^2 / nu), sigma^2 ~ Inv-Gamma(alpha, beta); the network predicts
(gamma, nu, alpha, beta). Its marginal, the predictive, is a Student-t with 2 alpha degrees
of freedom, location gamma and scale^2 = beta (1 + nu) / (nu alpha); its variance splits
into aleatoric E[sigma^2] = beta / (alpha - 1) and epistemic Var[mu] = beta / (nu (alpha -
1)). The loss per value is that Student-t's negative log-likelihood plus
``evidential_weight`` x |y - gamma| (2 nu + alpha) (the evidence regulariser).

For an MLIP (the choices, as in the card ``uqbench/method_cards/evidential-egnn.yaml``):
- gamma is the backbone's own prediction: the energy, and the forces as -grad E, so every
  prediction of the mean is still a potential;
- the energy per atom gets one (nu, alpha, beta) per structure from the mean of its atoms'
  final states; each atom gets one (nu, alpha, beta) for its three force components (the
  forces are not differentiated through the head);
- nu = softplus(.) + 1e-6, alpha = 1 + softplus(.) + 1e-6 (so the std exists: df > 2),
  beta = softplus(.) + 1e-6, in loss units;
- the backbone first trains with the MSE loss for ``warm_start_fraction`` of the budget
  (as MVE: the evidence cannot learn from the residuals of an untrained mean), then backbone
  and heads minimise the evidential loss of energy + ``force_weight`` x forces.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from uqbench.backbones.adapter import energy_and_forces
from uqbench.backbones.graph import (
    at_energy_labels,
    at_force_labels,
    mean_or_zero,
    structure_sum,
)
from uqbench.params import Interval
from uqbench.strategies.base import WarmStarted
from uqbench.strategies.heads import AtomHeads

EVIDENCE_FLOOR = 1e-6


def nig_nll(err: torch.Tensor, nu: torch.Tensor, alpha: torch.Tensor,
            beta: torch.Tensor) -> torch.Tensor:
    """Elementwise negative log marginal likelihood of a NIG(gamma, nu, alpha, beta) at an
    observation with err = y - gamma (Amini et al. 2020, eq. 8): the NLL of a Student-t
    with 2 alpha degrees of freedom and scale^2 = beta (1 + nu) / (nu alpha)."""
    omega = 2.0 * beta * (1.0 + nu)
    return (0.5 * torch.log(math.pi / nu) - alpha * torch.log(omega)
            + (alpha + 0.5) * torch.log(nu * err**2 + omega)
            + torch.lgamma(alpha) - torch.lgamma(alpha + 0.5))


def nig_regulariser(err: torch.Tensor, nu: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """|y - gamma| (2 nu + alpha): evidence is penalised where the error is large."""
    return err.abs() * (2.0 * nu + alpha)


def nig_moments(nu: torch.Tensor, alpha: torch.Tensor,
                beta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Predictive std, its epistemic part (std of mu) and the degrees of freedom of the
    predictive Student-t: sqrt(beta (1 + nu) / (nu (alpha - 1))), sqrt(beta / (nu (alpha
    - 1))), 2 alpha."""
    aleatoric = beta / (alpha - 1.0)
    epistemic = aleatoric / nu
    return torch.sqrt(aleatoric + epistemic), torch.sqrt(epistemic), 2.0 * alpha


class EvidentialHeads(AtomHeads):
    """A backbone with two NIG heads on its final atom states (see the module doc)."""

    def __init__(self, backbone: nn.Module, features, width: int) -> None:
        super().__init__(backbone, features, width, n_out=3)

    @staticmethod
    def _nig(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        nu = F.softplus(raw[..., 0]) + EVIDENCE_FLOOR
        alpha = 1.0 + F.softplus(raw[..., 1]) + EVIDENCE_FLOOR
        beta = F.softplus(raw[..., 2]) + EVIDENCE_FLOOR
        return nu, alpha, beta

    def evidence(self, batch):
        """(nu, alpha, beta) of the energy per atom per structure [n_structures] and of the
        force components per atom [n_atoms], in loss units."""
        h = self.atom_states(batch)
        pooled = structure_sum(batch, h) / batch.n_atoms.to(h.dtype)[:, None]
        return self._nig(self.energy_head(pooled)), self._nig(self.force_head(h))


class Evidential(WarmStarted):
    """Evidential-<backbone>: the backbone's mean with NIG heads, evidential loss after an
    MSE warm start; a Student-t per target (parametric)."""

    parametric = True
    parameter_constraints = {
        "head_width": Interval(int, 1),
        "evidential_weight": Interval(float, 0),
    }

    def __init__(self, head_width: int = 32, evidential_weight: float = 0.001,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.head_width = head_width
        self.evidential_weight = evidential_weight

    def wrap(self, backbone: nn.Module) -> nn.Module:
        return EvidentialHeads(backbone, self.adapter.node_features, self.head_width)

    def fit_member(self, member, train_items, val_items):
        """MSE warm start of the backbone, then the evidential loss of backbone and heads;
        the budget split by ``warm_start_fraction`` as MVE's and BLIP's."""
        from uqbench.training import batches

        def prepare(model, *_):
            model.materialise(next(iter(batches(train_items[:1], 1, self.device_,
                                                self.torch_dtype))))

        return self.fit_warm_then(member, train_items, val_items, "evidential",
                                  self.evidential_loss, "evidential", prepare=prepare)

    def evidential_loss(self, model: EvidentialHeads, batch) -> torch.Tensor:
        """NIG NLL + evidential_weight x regulariser of the energy per atom, + force_weight x
        the same of the force components; each a mean over the labels present."""
        e, f = energy_and_forces(model, batch, create_graph=model.training)[:2]
        (nu_e, a_e, b_e), (nu_f, a_f, b_f) = model.evidence(batch)
        scale = model.energy_scale
        e_err, nu_e, a_e, b_e = at_energy_labels(
            batch, (e - batch.energy) / batch.n_atoms / scale, nu_e, a_e, b_e)
        f_err, nu_f, a_f, b_f = at_force_labels(
            batch, (f - batch.forces) / scale,
            *(x[:, None].expand_as(f) for x in (nu_f, a_f, b_f)))
        lam = self.evidential_weight
        energy = mean_or_zero(nig_nll(e_err, nu_e, a_e, b_e)
                              + lam * nig_regulariser(e_err, nu_e, a_e))
        forces = mean_or_zero(nig_nll(f_err, nu_f, a_f, b_f)
                              + lam * nig_regulariser(f_err, nu_f, a_f))
        return energy + self.force_weight * forces

    def predict_parametric(self, batch) -> dict[str, torch.Tensor]:
        model = self.models_[0]
        e, f = energy_and_forces(model, batch)[:2]
        with torch.no_grad():
            (nu_e, a_e, b_e), (nu_f, a_f, b_f) = model.evidence(batch)
        scale = model.energy_scale
        n = batch.n_atoms.to(e.dtype)
        std_e, epi_e, df_e = nig_moments(nu_e, a_e, b_e)  # energy per atom, loss units
        std_f, epi_f, df_f = nig_moments(nu_f, a_f, b_f)
        def per_component(x):
            return x[:, None].expand_as(f)

        return {"energy_mean": e, "energy_std": scale * n * std_e,
                "energy_epistemic_std": scale * n * epi_e, "energy_df": df_e,
                "forces_mean": f, "forces_std": per_component(scale * std_f),
                "forces_epistemic_std": per_component(scale * epi_f),
                "forces_df": per_component(df_f)}
