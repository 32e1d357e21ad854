"""BLIP (Coscia, de Haan, Welling 2025), implemented from its published description.

Adaptive variational dropout: the weights of every message and update function are
perturbed by zero-mean Gaussian noise whose scale an inference network computes from the
initial node features and the edge attributes; weights and inference network are trained
jointly by variational inference. No code is public; the choices made here (see the card
``methods/blip-egnn.yaml``):

- Posterior per weight N(w, alpha w^2) (Gaussian/variational dropout, Kingma et al. 2015),
  alpha = exp(log_alpha) given per row (edge for messages, atom for updates) and per
  function by the inference network; sampled with the local reparameterisation trick,
  y = x W^T + b + sqrt(alpha (x^2)(W^2)^T) * eps, eps ~ N(0, 1) per row and output.
- Prior: log-uniform, with the KL approximation of Molchanov et al. (2017); KL per function
  = number of weights x mean over rows of KL(alpha_row); divided by the training-set size.
- Likelihood: Gaussian on the energy per atom and on every force component, with learned
  homoscedastic noise scales (one for energies, one for forces), summed over a structure's
  targets; the objective per structure is NLL + KL / N_train, the KL weight annealed
  linearly from 0. (A fixed unit-variance likelihood was tried first: on 200 structures the
  KL then drove every alpha to its maximum and the network learned nothing.)
For fixed eps, every sample is an ordinary potential: its forces are -grad E_s.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from uqbench.backbones.adapter import BackboneAdapter, energy_and_forces
from uqbench.strategies.base import TorchUQMethod
from uqbench.training import fixed_noise, stress_components, uses_stress

# Molchanov, Ashukha, Vetrov (2017), sparse variational dropout: -KL ~ k1 s(k2 + k3 la)
# - 0.5 log(1 + 1/alpha) - k1.
_K1, _K2, _K3 = 0.63576, 1.87320, 1.48695
LOG_ALPHA_MAX = 4.0  # noise std at most e^2 times a weight's magnitude


def _soft_cap(raw: torch.Tensor) -> torch.Tensor:
    """log alpha <= LOG_ALPHA_MAX, smoothly: a hard clamp would stop all gradients there."""
    return LOG_ALPHA_MAX - F.softplus(LOG_ALPHA_MAX - raw)


def kl_log_uniform(log_alpha: torch.Tensor) -> torch.Tensor:
    """KL(N(w, alpha w^2) || log-uniform) per weight (Molchanov et al. 2017), >= 0."""
    neg_kl = (_K1 * torch.sigmoid(_K2 + _K3 * log_alpha)
              - 0.5 * F.softplus(-log_alpha) - _K1)
    return -neg_kl


class _AlphaContext:
    def __init__(self) -> None:
        self.log_alpha: dict[str, torch.Tensor] = {}  # group -> [rows]


class VariationalLinear(nn.Module):
    """A Linear layer whose weights carry multiplicative Gaussian noise of variance alpha."""

    def __init__(self, linear: nn.Linear, group: str, context: _AlphaContext) -> None:
        super().__init__()
        self.linear = linear
        self.group = group
        self.context = context

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = self.linear(x)
        log_alpha = self.context.log_alpha.get(self.group)
        if log_alpha is None:
            return mean
        var = F.linear(x * x, self.linear.weight * self.linear.weight)
        std = torch.sqrt(var * torch.exp(log_alpha)[:, None] + 1e-20)
        return mean + std * torch.randn_like(mean)


class BLIPModel(nn.Module):
    """Backbone + inference networks; forward(stochastic=True) draws one posterior sample
    per row and stores the KL of the rows it saw in ``last_kl``."""

    def __init__(self, backbone: nn.Module, adapter: BackboneAdapter, hidden: int,
                 init_log_alpha: float) -> None:
        super().__init__()
        self.backbone = backbone
        self._adapter = adapter
        self._context = _AlphaContext()
        self.groups: dict[str, tuple[str, int]] = {}  # group -> (domain, number of weights)
        for group, domain, sites in adapter.message_update_sites(backbone):
            n_weights = 0
            for site in sites:
                n_weights += site.get().weight.numel()
                site.set(VariationalLinear(site.get(), group, self._context))
            self.groups[group] = (domain, n_weights)
        self._edge_groups = [g for g, (d, _) in self.groups.items() if d == "edge"]
        self._atom_groups = [g for g, (d, _) in self.groups.items() if d == "atom"]
        node_dim, edge_dim = adapter.invariant_dims(backbone)
        self.edge_net = self._net(2 * node_dim + edge_dim, hidden, len(self._edge_groups),
                                  init_log_alpha)
        self.node_net = self._net(node_dim, hidden, len(self._atom_groups), init_log_alpha)
        # Observation noise of the likelihood, in units of the training force RMS.
        self.log_sigma_energy = nn.Parameter(torch.zeros(()))
        self.log_sigma_forces = nn.Parameter(torch.zeros(()))
        self.log_sigma_stress = nn.Parameter(torch.zeros(()))  # used where labels have stress
        self.last_kl: torch.Tensor | None = None

    @staticmethod
    def _net(d_in: int, hidden: int, d_out: int, init: float) -> nn.Sequential:
        net = nn.Sequential(nn.Linear(d_in, hidden), nn.SiLU(), nn.Linear(hidden, d_out))
        nn.init.zeros_(net[2].weight)  # start from a constant, small noise everywhere
        nn.init.constant_(net[2].bias, init)
        return net

    @property
    def energy_scale(self) -> torch.Tensor:
        return self.backbone.energy_scale

    @property
    def direct_forces(self) -> bool:
        return getattr(self.backbone, "direct_forces", False)

    def forward(self, batch, stochastic: bool = True, **backbone_kwargs):
        if not stochastic:
            self._context.log_alpha = {}
            return self.backbone(batch, **backbone_kwargs)
        h0, edge_attr = self._adapter.invariant_inputs(self.backbone, batch)
        edge_in = torch.cat([h0[batch.dst], h0[batch.src], edge_attr], dim=-1)
        la_edge = _soft_cap(self.edge_net(edge_in))
        la_node = _soft_cap(self.node_net(h0))
        log_alpha = {g: la_edge[:, k] for k, g in enumerate(self._edge_groups)}
        log_alpha.update({g: la_node[:, k] for k, g in enumerate(self._atom_groups)})
        kl = sum(self.groups[g][1] * kl_log_uniform(la).mean() for g, la in log_alpha.items())
        self.last_kl = kl
        self._context.log_alpha = log_alpha
        try:
            return self.backbone(batch, **backbone_kwargs)
        finally:
            self._context.log_alpha = {}


class BLIP(TorchUQMethod):
    """BLIP-<backbone>: adaptive variational dropout trained by variational inference."""

    quick_params = {"max_epochs": 15, "patience": 5, "lr": 3e-3,
                    "backbone_options": {"hidden": 32, "n_layers": 2}}

    def __init__(self, kl_weight: float = 1.0, kl_anneal: float = 0.25,
                 inference_hidden: int = 32, init_log_alpha: float = -6.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.kl_weight = kl_weight
        self.kl_anneal = kl_anneal
        self.inference_hidden = inference_hidden
        self.init_log_alpha = init_log_alpha

    def _wrap(self, backbone: nn.Module) -> nn.Module:
        return BLIPModel(backbone, self._adapter, self.inference_hidden, self.init_log_alpha)

    def _fit_member(self, member, train_items, val_items):
        model = self._wrap(self._new_backbone(train_items)).to(self.device_, self._torch_dtype)
        self._n_train = len(train_items)
        self._steps_per_epoch = math.ceil(len(train_items) / self.batch_size)
        self._step = 0
        history = self._train(model, train_items, val_items, self._elbo_loss, self.max_epochs,
                              self.lr, member, "variational inference")
        return model, history

    def _kl_factor(self) -> float:
        """KL weight, ramped linearly over the first ``kl_anneal`` fraction of max_epochs."""
        ramp = self.kl_anneal * self.max_epochs * self._steps_per_epoch
        if ramp <= 0:
            return self.kl_weight
        progress = self._step / ramp
        return self.kl_weight * min(1.0, progress)

    def _nll(self, model: BLIPModel, batch) -> torch.Tensor:
        """Gaussian NLL per structure (energy per atom + its force components, + its stress
        components where labelled), averaged."""
        stress = uses_stress(batch, self.stress_weight)
        out = energy_and_forces(model, batch, create_graph=model.training, with_stress=stress)
        scale = model.energy_scale
        e_err = (out[0] - batch.energy) / batch.n_atoms / scale
        f_err = (out[1] - batch.forces) / scale
        ls_e, ls_f = model.log_sigma_energy, model.log_sigma_forces
        nll_e = 0.5 * (e_err * torch.exp(-ls_e)) ** 2 + ls_e
        nll_f_atoms = (0.5 * (f_err * torch.exp(-ls_f)) ** 2 + ls_f).sum(-1)
        nll_f = torch.zeros_like(nll_e).index_add_(0, batch.structure, nll_f_atoms)
        nll = (nll_e + self.force_weight * nll_f).mean()
        if stress:
            pred, true = stress_components(out[2], batch, scale)
            ls_s = model.log_sigma_stress
            nll_s = (0.5 * ((pred - true) * torch.exp(-ls_s)) ** 2 + ls_s).sum(-1)
            nll = nll + self.stress_weight * nll_s.sum() / batch.n_structures
        return nll

    def _elbo_loss(self, model: BLIPModel, batch) -> torch.Tensor:
        if model.training:
            self._step += 1
            nll = self._nll(model, batch)
            return nll + self._kl_factor() * model.last_kl / self._n_train
        with fixed_noise(self.seed, self.device_):  # the full objective, same noise each epoch
            nll = self._nll(model, batch)
        return nll + self.kl_weight * model.last_kl / self._n_train

    def kl(self, structures) -> float:
        """The KL term (before division by the training size) on ``structures``."""
        from uqbench.backbones.graph import collate

        batch = collate(self._adapter.graph_items(structures), self._torch_dtype).to(
            self.device_)
        with torch.no_grad():
            self.models_[0](batch)
        return float(self.models_[0].last_kl)

    def _copies_per_pass(self, n_samples: int) -> int:
        return n_samples

    def _sample(self, batch, n_samples: int):
        return self._member_passes(self.models_[0], batch, n_samples)

    def mean_prediction(self, batch):
        """Energies and forces of the noise-free network (posterior mean weights)."""
        return energy_and_forces(self.models_[0], batch, stochastic=False)
