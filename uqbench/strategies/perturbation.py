"""Learned functional perturbations (P-*): one global noise vector per structure and sample
modulates every normalisation layer of the backbone; finetuned with the fair CRPS.

z ~ N(0, I_d) is drawn once per structure and sample and shared by all of its atoms and
edges; each normalisation layer becomes LN(h) (1 + gamma(z)) + beta(z) with gamma and beta
linear in z and initialised to zero, so the perturbed model starts exactly as the
deterministic one (the conditional LayerNorm of FGN, Alet et al. 2025). For a fixed z the
model is an ordinary potential, so the forces of sample s are -grad E_s.
"""

from __future__ import annotations

import torch
from torch import nn

from uqbench.backbones.adapter import BackboneAdapter, BackboneWrapper, energy_and_forces
from uqbench.backbones.graph import at_energy_labels, at_force_labels, mean_or_zero
from uqbench.params import Interval, Optional, Options
from uqbench.strategies.base import TorchUQMethod
from uqbench.training import fair_crps, fixed_noise, stress_components, uses_stress


class _RowContext:
    """Per-forward state shared by the conditioned layers of one model (not a module)."""

    def __init__(self) -> None:
        self.z: torch.Tensor | None = None  # [n_structures, d]
        self.rows: dict[str, torch.Tensor] = {}  # domain -> structure index of each row


class ConditionalLayerNorm(nn.Module):
    """LN(h) (1 + gamma(z)) + beta(z), gamma and beta linear in z, zero at initialisation.

    With ``bound`` b, gamma and beta become b tanh(linear(z) / b): the same maps near zero,
    but no noise draw can scale or shift a normalised feature by more than b.
    """

    def __init__(self, norm: nn.LayerNorm, noise_dim: int, domain: str,
                 context: _RowContext, bound: float | None = None) -> None:
        super().__init__()
        self.norm = norm
        self.bound = bound
        width = norm.normalized_shape[-1]
        self.gamma = nn.Linear(noise_dim, width)
        self.beta = nn.Linear(noise_dim, width)
        for lin in (self.gamma, self.beta):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)
        self.domain = domain
        self.context = context

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out = self.norm(h)
        z = self.context.z
        if z is None:
            return out
        rows = self.context.rows[self.domain]
        gamma, beta = self.gamma(z), self.beta(z)
        if self.bound is not None:
            gamma = self.bound * torch.tanh(gamma / self.bound)
            beta = self.bound * torch.tanh(beta / self.bound)
        return out * (1.0 + gamma[rows]) + beta[rows]


class PerturbedModel(BackboneWrapper):
    """A backbone whose normalisation layers are conditioned on per-structure noise."""

    def __init__(self, backbone: nn.Module, adapter: BackboneAdapter, noise_dim: int,
                 bound: float | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.noise_dim = noise_dim
        self._context = _RowContext()
        self._adapter = adapter
        for site in adapter.norm_sites(backbone):
            site.set(ConditionalLayerNorm(site.get(), noise_dim, site.domain, self._context,
                                          bound))

    def perturbation_parameters(self) -> list[nn.Parameter]:
        """The maps from noise to scale and shift (gamma, beta) of every conditioned layer."""
        return [p for m in self.modules() if isinstance(m, ConditionalLayerNorm)
                for p in (*m.gamma.parameters(), *m.beta.parameters())]

    def forward(self, batch, z: torch.Tensor | None = None, **backbone_kwargs):
        """Energies for noise ``z`` [n_structures, noise_dim]; z = None is the deterministic
        model (identical to z = 0 only at initialisation)."""
        self._context.z = z
        self._context.rows = self._adapter.row_structures(batch)
        try:
            return self.backbone(batch, **backbone_kwargs)
        finally:
            self._context.z = None
            self._context.rows = {}


class FunctionalPerturbation(TorchUQMethod):
    """P-<backbone>: deterministic MSE pretraining, then CRPS finetuning of all weights.

    Budget: the CRPS stage (at ``finetune_lr``) gets ``finetune_fraction`` of the fit's
    optimiser steps (`budget_steps`) and MSE pretraining (at ``lr``) the rest, so the whole
    fit spends what every other method spends; ``pretrain=False`` gives the CRPS stage all
    of them (CRPS from scratch).
    The CRPS stage draws ``train_samples`` samples per structure and minimises the
    almost-fair CRPS (``crps_alpha``: 1 is the fair CRPS) of the energy per atom plus
    ``force_weight`` x that of the force components (in units of the training force RMS).
    The noise-to-(gamma, beta) maps may have their own learning rate and weight decay
    (``perturbation_lr``, ``perturbation_weight_decay``) and a bound (``perturbation_bound``).
    """

    parameter_constraints = {
        "noise_dim": Interval(int, 1),
        "train_samples": Interval(int, 2),
        "finetune_lr": Interval(float, 0, None, closed="neither"),
        "pretrain": Options((True, False)),
        "finetune_fraction": Interval(float, 0, 1, closed="right"),
        "crps_alpha": Interval(float, 0, 1),
        "perturbation_lr": Optional(Interval(float, 0, None, closed="neither")),
        "perturbation_weight_decay": Interval(float, 0),
        "perturbation_bound": Optional(Interval(float, 0, None, closed="neither")),
    }

    def __init__(self, noise_dim: int = 32, train_samples: int = 4,
                 finetune_lr: float = 3e-4, pretrain: bool = True,
                 finetune_fraction: float = 0.3333, crps_alpha: float = 0.95,
                 perturbation_lr: float | None = None, perturbation_weight_decay: float = 0.0,
                 perturbation_bound: float | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.noise_dim = noise_dim
        self.train_samples = train_samples
        self.finetune_lr = finetune_lr
        self.pretrain = pretrain
        self.finetune_fraction = finetune_fraction
        self.crps_alpha = crps_alpha
        self.perturbation_lr = perturbation_lr
        self.perturbation_weight_decay = perturbation_weight_decay
        self.perturbation_bound = perturbation_bound

    def wrap(self, backbone: nn.Module) -> nn.Module:
        return PerturbedModel(backbone, self.adapter, self.noise_dim, self.perturbation_bound)

    def fit_member(self, member, train_items, val_items):
        if self.train_samples < 2:
            raise ValueError("train_samples must be >= 2 for the fair CRPS")
        if not 0.0 <= self.crps_alpha <= 1.0:
            raise ValueError(f"crps_alpha must be in [0, 1]; got {self.crps_alpha}")
        if not 0.0 < self.finetune_fraction <= 1.0:
            raise ValueError(f"finetune_fraction must be in (0, 1]; got {self.finetune_fraction}")
        backbone = self.new_backbone(train_items)
        stages = {}
        finetune_steps = self.stage_steps(self.finetune_fraction if self.pretrain else 1.0)
        if self.pretrain:
            stages["pretrain"] = self.train_stage(backbone, train_items, val_items, self.loss,
                                                  None, self.lr, member, "pretraining",
                                                  max_steps=self.total_steps_ - finetune_steps)
        model = self.wrap(backbone).to(self.device_, self.torch_dtype)
        stages["finetune"] = self.train_stage(
            model, train_items, val_items, self._crps_loss, None,
            self.finetune_lr, member, "CRPS finetuning", max_steps=finetune_steps,
            param_groups=self._param_groups(model),
            schedule_offset=self.total_steps_ - finetune_steps)
        history = self.staged_history(stages, "finetune")
        history.update(stages)  # "pretrain" / "finetune" at the top level, as before
        return model, history

    def _param_groups(self, model: PerturbedModel) -> list[dict]:
        maps = model.perturbation_parameters()
        ids = {id(p) for p in maps}
        rest = [p for p in model.parameters() if id(p) not in ids]
        lr = self.perturbation_lr if self.perturbation_lr is not None else self.finetune_lr
        return [{"params": rest},
                {"params": maps, "lr": lr, "weight_decay": self.perturbation_weight_decay}]

    def _noise(self, n: int, like: torch.Tensor) -> torch.Tensor:
        return torch.randn(n, self.noise_dim, device=like.device, dtype=like.dtype)

    def _crps_loss(self, model: PerturbedModel, batch) -> torch.Tensor:
        if not model.training:
            with fixed_noise(self.seed, self.device_):
                return self._crps_terms(model, batch)
        return self._crps_terms(model, batch)

    def _crps_terms(self, model: PerturbedModel, batch) -> torch.Tensor:
        s, n = self.train_samples, batch.n_structures
        z = self._noise(s * n, batch.positions)
        stress = uses_stress(batch, self.stress_weight)
        out = energy_and_forces(model, batch.repeat(s), create_graph=model.training,
                                with_stress=stress, z=z)
        scale = model.energy_scale
        e = out[0].reshape(s, n) / batch.n_atoms / scale
        f = out[1].reshape(s, -1, 3) / scale
        e, e_true = at_energy_labels(batch, e, batch.energy / batch.n_atoms / scale)
        f, f_true = at_force_labels(batch, f, batch.forces / scale)
        a = self.crps_alpha
        loss = (mean_or_zero(fair_crps(e, e_true, a))
                + self.force_weight * mean_or_zero(fair_crps(f, f_true, a)))
        if stress:
            pred, true = stress_components(out[2].reshape(s, n, 3, 3), batch, scale)
            loss = loss + self.stress_weight * fair_crps(pred, true, a).mean()
        return loss

    def copies_per_pass(self, n_samples: int) -> int:
        return n_samples

    def sample(self, batch, n_samples: int):
        z = self._noise(n_samples * batch.n_structures, batch.positions)
        return self.member_passes(self.models_[0], batch, n_samples, z=z)
