"""BLIP (Coscia, de Haan, Welling 2025), implemented from its published description.

Adaptive variational dropout: the weights of every message and update function are
perturbed by zero-mean Gaussian noise whose scale an inference network computes from the
initial node features and the edge attributes; weights and inference network are trained
jointly by variational inference. No code is public; the choices made here (see the card
``uqbench/method_cards/blip-egnn.yaml``):

- Posterior per weight N(w, alpha w^2) (Gaussian/variational dropout, Kingma et al. 2015),
  alpha = exp(log_alpha) given per row (edge for messages, atom for updates) and per
  function by the inference network; sampled with the local reparameterisation trick,
  y = x W^T + b + sqrt(alpha (x^2)(W^2)^T) * eps, eps ~ N(0, 1) per row and output.
- Prior (``prior``): ``gaussian`` (default), N(0, 1/fan_in) on every weight — the scale of
  a standard initialisation — whose KL has its minimum at a finite alpha (alpha w^2 =
  1/fan_in); or ``log-uniform`` (Molchanov et al. 2017), whose KL falls monotonically in
  alpha and so pushes every scale to its cap unless the likelihood holds it back (on
  nbody at 100 structures it did not: every alpha at the cap, a model predicting zero).
- Likelihood: Gaussian on the energy per atom and on the force components with learned
  homoscedastic noise scales (initialised at the network's RMS training residual when the
  variational stage starts), averaged over targets and weighted like every other
  strategy's loss (energy term + ``force_weight`` x force term); the objective per
  structure is that NLL + ``kl_weight`` x KL / N_train (``kl_weight`` < 1 tempers the KL;
  it is relative to this averaged likelihood). The KL weight warms up linearly from 0 over
  the first ``kl_anneal`` of the variational stage.
- Optional deterministic warm start: the backbone first trains with the MSE loss for
  ``warm_start_fraction`` of the budget, then the variational stage spends the rest.
  That stage's learning rate warms up linearly over its first ``lr_warmup`` of steps: a
  fresh Adam's first steps would move every warm-started weight by about lr (this undid
  the warm start of seed 0 on silica-bks in one step, and the run collapsed).
For fixed eps, every sample is an ordinary potential: its forces are -grad E_s.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from uqbench.backbones.adapter import BackboneAdapter, BackboneWrapper, energy_and_forces
from uqbench.backbones.graph import at_energy_labels, at_force_labels, mean_or_zero
from uqbench.params import Interval, Options
from uqbench.strategies.base import WarmStarted
from uqbench.training import fixed_noise, stress_components, uses_stress

# Molchanov, Ashukha, Vetrov (2017), sparse variational dropout: -KL ~ k1 s(k2 + k3 la)
# - 0.5 log(1 + 1/alpha) - k1.
_K1, _K2, _K3 = 0.63576, 1.87320, 1.48695
LOG_ALPHA_MAX = 4.0  # noise std at most e^2 times a weight's magnitude


def _soft_cap(raw: torch.Tensor) -> torch.Tensor:
    """log alpha <= LOG_ALPHA_MAX, smoothly: a hard clamp would stop all gradients there."""
    return LOG_ALPHA_MAX - F.softplus(LOG_ALPHA_MAX - raw)


def kl_gaussian(log_alpha: torch.Tensor, n_weights: int, log_abs_w_sum: torch.Tensor,
                w2_over_var_sum: torch.Tensor, log_prior_std_sum: float) -> torch.Tensor:
    """KL(prod_j N(w_j, alpha w_j^2) || prod_j N(0, s_j^2)) over one function's weights,
    for each row's alpha: sum_j [log s_j - log|w_j| - log(alpha)/2 + (1 + alpha) w_j^2 /
    (2 s_j^2) - 1/2], with the sums over weights passed in (they do not depend on alpha)."""
    return (log_prior_std_sum - log_abs_w_sum - 0.5 * n_weights * log_alpha
            + 0.5 * (1.0 + torch.exp(log_alpha)) * w2_over_var_sum - 0.5 * n_weights)


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


class BLIPModel(BackboneWrapper):
    """Backbone + inference networks; forward(stochastic=True) draws one posterior sample
    per row and stores the KL of the rows it saw in ``last_kl``."""

    def __init__(self, backbone: nn.Module, adapter: BackboneAdapter, hidden: int,
                 init_log_alpha: float, prior: str = "gaussian") -> None:
        super().__init__()
        if prior not in ("gaussian", "log-uniform"):
            raise ValueError(f"prior must be 'gaussian' or 'log-uniform'; got {prior!r}")
        self.backbone = backbone
        self.prior = prior
        self._adapter = adapter
        self._context = _AlphaContext()
        self.groups: dict[str, tuple[str, int]] = {}  # group -> (domain, number of weights)
        self._group_layers: dict[str, list[VariationalLinear]] = {}
        for group, domain, sites in adapter.message_update_sites(backbone):
            n_weights = 0
            layers = []
            for site in sites:
                n_weights += site.get().weight.numel()
                layer = VariationalLinear(site.get(), group, self._context)
                site.set(layer)
                layers.append(layer)
            self.groups[group] = (domain, n_weights)
            self._group_layers[group] = layers
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
        self.last_kl = sum(self._group_kl(g, la) for g, la in log_alpha.items())
        self._context.log_alpha = log_alpha
        try:
            return self.backbone(batch, **backbone_kwargs)
        finally:
            self._context.log_alpha = {}


    def _group_kl(self, group: str, log_alpha: torch.Tensor) -> torch.Tensor:
        """KL of one function's weights, averaged over the rows that saw it."""
        n_weights = self.groups[group][1]
        if self.prior == "log-uniform":
            return n_weights * kl_log_uniform(log_alpha).mean()
        log_abs_w, w2_over_var, log_std = 0.0, 0.0, 0.0
        for layer in self._group_layers[group]:
            w = layer.linear.weight
            fan_in = w.shape[1]
            w2 = w * w
            log_abs_w = log_abs_w + 0.5 * torch.log(w2 + 1e-12).sum()
            w2_over_var = w2_over_var + fan_in * w2.sum()  # prior variance 1 / fan_in
            log_std = log_std - 0.5 * math.log(fan_in) * w.numel()
        return kl_gaussian(log_alpha, n_weights, log_abs_w, w2_over_var, log_std).mean()


class BLIP(WarmStarted):
    """BLIP-<backbone>: adaptive variational dropout trained by variational inference."""

    parameter_constraints = {
        "kl_weight": Interval(float, 0),
        "kl_anneal": Interval(float, 0, 1),
        "inference_hidden": Interval(int, 1),
        "init_log_alpha": Interval(float, None, LOG_ALPHA_MAX),
        "prior": Options(("gaussian", "log-uniform")),
    }

    def __init__(self, kl_weight: float = 1e-3, kl_anneal: float = 0.25,
                 inference_hidden: int = 32, init_log_alpha: float = -6.0,
                 prior: str = "gaussian", **kwargs) -> None:
        super().__init__(**kwargs)
        self.kl_weight = kl_weight
        self.kl_anneal = kl_anneal
        self.inference_hidden = inference_hidden
        self.init_log_alpha = init_log_alpha
        self.prior = prior

    def wrap(self, backbone: nn.Module) -> nn.Module:
        return BLIPModel(backbone, self.adapter, self.inference_hidden, self.init_log_alpha,
                         self.prior)

    def fit_member(self, member, train_items, val_items):
        if not 0.0 <= self.warm_start_fraction < 1.0:
            raise ValueError(f"warm_start_fraction must be in [0, 1); got "
                             f"{self.warm_start_fraction}")

        def prepare(model, vi_steps):
            self._init_noise_scales(model, train_items)
            self._n_train = len(train_items)
            self._ramp_steps = self.kl_anneal * vi_steps
            self._step = 0

        return self.fit_warm_then(member, train_items, val_items, "variational",
                                  self._elbo_loss, "variational inference", prepare=prepare)

    def _init_noise_scales(self, model: BLIPModel, train_items: list[dict]) -> None:
        """Start the likelihood's noise scales at the RMS residual of the (noise-free)
        network on the training set: after a warm start that is the fit already reached,
        so the likelihood holds the network to it from the first variational step (starting
        at 1, the scale of the labels themselves, let the KL undo the warm start)."""
        from uqbench.training import batches

        sq_e, sq_f, n_e, n_f = 0.0, 0.0, 0, 0
        for batch in batches(train_items, 4 * self.batch_size, self.device_,
                             self.torch_dtype):
            e, f = (x.detach() for x in energy_and_forces(model, batch, stochastic=False)[:2])
            scale = model.energy_scale
            (e_err,) = at_energy_labels(batch, (e - batch.energy) / batch.n_atoms / scale)
            (f_err,) = at_force_labels(batch, (f - batch.forces) / scale)
            sq_e += float((e_err**2).sum())
            sq_f += float((f_err**2).sum())
            n_e, n_f = n_e + e_err.numel(), n_f + f_err.numel()
        with torch.no_grad():
            for param, sq, n in ((model.log_sigma_energy, sq_e, n_e),
                                 (model.log_sigma_forces, sq_f, n_f)):
                param.fill_(0.5 * math.log(max(sq / max(n, 1), 1e-8)))

    def _kl_factor(self) -> float:
        """KL weight, ramped linearly over the first ``kl_anneal`` of the variational
        stage's steps."""
        if self._ramp_steps <= 0:
            return self.kl_weight
        return self.kl_weight * min(1.0, self._step / self._ramp_steps)

    def _nll(self, model: BLIPModel, batch) -> torch.Tensor:
        """Gaussian NLL weighted like the other strategies' losses: mean over structures of
        the energy-per-atom term + force_weight x mean over force components (+
        stress_weight x mean over labelled stress components)."""
        stress = uses_stress(batch, self.stress_weight)
        out = energy_and_forces(model, batch, create_graph=model.training, with_stress=stress)
        scale = model.energy_scale
        (e_err,) = at_energy_labels(batch, (out[0] - batch.energy) / batch.n_atoms / scale)
        (f_err,) = at_force_labels(batch, (out[1] - batch.forces) / scale)
        ls_e, ls_f = model.log_sigma_energy, model.log_sigma_forces
        nll_e = mean_or_zero(0.5 * (e_err * torch.exp(-ls_e)) ** 2 + ls_e)
        nll_f = mean_or_zero(0.5 * (f_err * torch.exp(-ls_f)) ** 2 + ls_f)
        nll = nll_e + self.force_weight * nll_f
        if stress:
            pred, true = stress_components(out[2], batch, scale)
            ls_s = model.log_sigma_stress
            nll = nll + self.stress_weight * (0.5 * ((pred - true) * torch.exp(-ls_s)) ** 2
                                              + ls_s).mean()
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

        batch = collate(self.adapter.graph_items(structures), self.torch_dtype).to(
            self.device_)
        with torch.no_grad():
            self.models_[0](batch)
        return float(self.models_[0].last_kl)

    def copies_per_pass(self, n_samples: int) -> int:
        return n_samples

    def sample(self, batch, n_samples: int):
        return self.member_passes(self.models_[0], batch, n_samples)

    def mean_prediction(self, batch):
        """Energies and forces of the noise-free network (posterior mean weights)."""
        return energy_and_forces(self.models_[0], batch, stochastic=False)
