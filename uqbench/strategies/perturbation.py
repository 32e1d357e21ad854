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

from uqbench.backbones.adapter import BackboneAdapter, energy_and_forces
from uqbench.strategies.base import TorchUQMethod
from uqbench.training import fair_crps, fixed_noise, stress_components, uses_stress


class _RowContext:
    """Per-forward state shared by the conditioned layers of one model (not a module)."""

    def __init__(self) -> None:
        self.z: torch.Tensor | None = None  # [n_structures, d]
        self.rows: dict[str, torch.Tensor] = {}  # domain -> structure index of each row


class ConditionalLayerNorm(nn.Module):
    """LN(h) (1 + gamma(z)) + beta(z), gamma and beta linear in z, zero at initialisation."""

    def __init__(self, norm: nn.LayerNorm, noise_dim: int, domain: str,
                 context: _RowContext) -> None:
        super().__init__()
        self.norm = norm
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
        return out * (1.0 + self.gamma(z)[rows]) + self.beta(z)[rows]


class PerturbedModel(nn.Module):
    """A backbone whose normalisation layers are conditioned on per-structure noise."""

    def __init__(self, backbone: nn.Module, adapter: BackboneAdapter, noise_dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.noise_dim = noise_dim
        self._context = _RowContext()
        self._adapter = adapter
        for site in adapter.norm_sites(backbone):
            site.set(ConditionalLayerNorm(site.get(), noise_dim, site.domain, self._context))

    @property
    def energy_scale(self) -> torch.Tensor:
        return self.backbone.energy_scale

    @property
    def direct_forces(self) -> bool:
        return getattr(self.backbone, "direct_forces", False)

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

    ``max_epochs``/``lr`` are the pretraining budget (``pretrain=False`` skips it: CRPS from
    scratch); ``finetune_epochs``/``finetune_lr`` the CRPS stage, with ``train_samples``
    samples per structure and ``force_weight`` weighting the force-component CRPS against
    the energy-per-atom CRPS (both in units of the training force RMS).
    """

    quick_params = {"max_epochs": 10, "finetune_epochs": 8, "patience": 5, "lr": 3e-3,
                    "finetune_lr": 1e-3, "backbone_options": {"hidden": 32, "n_layers": 2}}

    def __init__(self, noise_dim: int = 32, train_samples: int = 4, finetune_epochs: int = 150,
                 finetune_lr: float = 3e-4, pretrain: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.noise_dim = noise_dim
        self.train_samples = train_samples
        self.finetune_epochs = finetune_epochs
        self.finetune_lr = finetune_lr
        self.pretrain = pretrain

    def _wrap(self, backbone: nn.Module) -> nn.Module:
        return PerturbedModel(backbone, self._adapter, self.noise_dim)

    def _fit_member(self, member, train_items, val_items):
        if self.train_samples < 2:
            raise ValueError("train_samples must be >= 2 for the fair CRPS")
        backbone = self._new_backbone(train_items)
        history = {}
        if self.pretrain:
            history["pretrain"] = self._train(backbone, train_items, val_items, self._loss,
                                              self.max_epochs, self.lr, member, "pretraining")
        model = self._wrap(backbone).to(self.device_, self._torch_dtype)
        history["finetune"] = self._train(model, train_items, val_items, self._crps_loss,
                                          self.finetune_epochs, self.finetune_lr, member,
                                          "CRPS finetuning")
        history["epochs"] = sum(h["epochs"] for h in history.values())
        history["train_loss"] = history["finetune"]["train_loss"]
        return model, history

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
        e_true = batch.energy / batch.n_atoms / scale
        f_true = batch.forces / scale
        loss = fair_crps(e, e_true).mean() + self.force_weight * fair_crps(f, f_true).mean()
        if stress:
            pred, true = stress_components(out[2].reshape(s, n, 3, 3), batch, scale)
            loss = loss + self.stress_weight * fair_crps(pred, true).mean()
        return loss

    def _copies_per_pass(self, n_samples: int) -> int:
        return n_samples

    def _sample(self, batch, n_samples: int):
        z = self._noise(n_samples * batch.n_structures, batch.positions)
        return self._member_passes(self.models_[0], batch, n_samples, z=z)
