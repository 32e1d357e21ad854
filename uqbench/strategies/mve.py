"""Mean-variance estimation (MVE): a variance head on the backbone's final atom states,
trained with the Gaussian negative log-likelihood after an MSE warm start.

The recipe (Nix & Weigend 1994; for MLIPs e.g. Tan et al. 2023; the warm start as in
Seitzer et al. 2022 and Busk et al. 2022): the backbone is first trained with the MSE loss
(``warm_start_fraction`` of the budget: the variance cannot learn from residuals of an
untrained mean), then backbone and heads together minimise

    NLL = 1/2 [log s_E^2 + e^2 / s_E^2]  +  force_weight x 1/2 [log s_F^2 + f^2 / s_F^2]

per structure (energy per atom, in the loss unit) and per force component. Two heads read
each atom's final state h_i: ``v_i = softplus(MLP(h_i))``, the variance of atom i's energy
contribution (atoms independent, so the structure's energy variance is sum_i v_i), and
``w_i = softplus(MLP(h_i))``, the variance of each of atom i's force components (a
per-atom isotropic force variance trained on the force residuals: the documented
approximation; forces are not differentiated through the variance). Variances carry a
floor of 1e-6 loss units squared. The prediction is a Gaussian per target.
"""

from __future__ import annotations

import torch
from torch import nn

from uqbench.backbones.adapter import energy_and_forces
from uqbench.backbones.graph import at_energy_labels, at_force_labels, mean_or_zero
from uqbench.params import Interval
from uqbench.strategies.base import WarmStarted
from uqbench.strategies.heads import AtomHeads

VARIANCE_FLOOR = 1e-6


def gaussian_nll(err: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """Elementwise Gaussian negative log-likelihood without the constant: 1/2 log var +
    err^2 / (2 var)."""
    return 0.5 * torch.log(var) + 0.5 * err**2 / var


class VarianceHeads(AtomHeads):
    """A backbone with two variance heads on its final atom states (see the module doc)."""

    def __init__(self, backbone: nn.Module, features, width: int) -> None:
        super().__init__(backbone, features, width, n_out=1)

    def variances(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Energy variance per structure [n_structures] and force variance per atom
        [n_atoms], in loss units squared (the energy one of the total, not per atom)."""
        h = self.atom_states(batch)
        v = nn.functional.softplus(self.energy_head(h)).squeeze(-1) + VARIANCE_FLOOR
        w = nn.functional.softplus(self.force_head(h)).squeeze(-1) + VARIANCE_FLOOR
        var_e = torch.zeros(batch.n_structures, dtype=v.dtype, device=v.device).index_add_(
            0, batch.structure, v)
        return var_e, w


class MeanVariance(WarmStarted):
    """MVE-<backbone>: the backbone's mean and two variance heads, NLL after an MSE warm
    start; a Gaussian per target (parametric)."""

    parametric = True
    parameter_constraints = {
        "head_width": Interval(int, 1),
    }

    def __init__(self, head_width: int = 32, **kwargs) -> None:
        super().__init__(**kwargs)
        self.head_width = head_width

    def wrap(self, backbone: nn.Module) -> nn.Module:
        adapter = self.adapter
        return VarianceHeads(backbone, adapter.node_features, self.head_width)

    def fit_member(self, member, train_items, val_items):
        """MSE warm start of the backbone, then the NLL of backbone and heads together; the
        budget (steps, else epochs) split by ``warm_start_fraction`` as BLIP's is."""
        return self.fit_warm_then(member, train_items, val_items, "nll", self.nll_loss, "NLL",
                                  prepare=lambda model, *_: model.materialise(
                                      self._first_batch(train_items)))

    def _first_batch(self, items):
        from uqbench.training import batches

        return next(iter(batches(items[:1], self.batch_size, self.device_, self.torch_dtype)))

    def nll_loss(self, model: VarianceHeads, batch) -> torch.Tensor:
        """Gaussian NLL of the energy per atom + force_weight x that of the force
        components, each a mean over the labels present (loss units)."""
        e, f = energy_and_forces(model, batch, create_graph=model.training)[:2]
        var_e, w = model.variances(batch)
        scale = model.energy_scale
        n = batch.n_atoms.to(e.dtype)
        e_err, var_e = at_energy_labels(batch, (e - batch.energy) / n / scale, var_e / n**2)
        f_err, var_f = at_force_labels(batch, (f - batch.forces) / scale,
                                       w[:, None].expand_as(f))
        return (mean_or_zero(gaussian_nll(e_err, var_e))
                + self.force_weight * mean_or_zero(gaussian_nll(f_err, var_f)))

    def predict_gaussian(self, batch):
        model = self.models_[0]
        e, f = energy_and_forces(model, batch)[:2]
        with torch.no_grad():
            var_e, w = model.variances(batch)
        scale = model.energy_scale
        return (e, scale * var_e.sqrt(), f, (scale * w.sqrt())[:, None].expand_as(f))
