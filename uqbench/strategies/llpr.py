"""Last-layer prediction rigidity (LLPR; Bigi, Chong, Ceriotti & Grasselli 2024): a
post-hoc, Laplace-like uncertainty for a trained deterministic model.

The backbone trains exactly as the deterministic baseline (the MSE loss, the whole budget;
same seed, same weights). Its readout's last Linear layer maps last-layer features phi
(everything of the readout before that layer) to energies, pooled per structure as the
backbone pools its readout (the adapter's `pool_readout`: F(A) = sum_i phi(h_i) on EGNN and
CHGNet, n_A phi(mean_i h_i) on Orb), so the energy per atom is affine in w . f(A) with
f(A) = F(A) / n_A, and each force component in w . g with g = dF / d r_(i, alpha) (the
backbone's unit, energy_scale on EGNN, is absorbed by alpha below). Treating w as the only
uncertain parameters, the loss's Gauss-Newton Hessian over the training set is

    H = (1/N_E) sum_A f(A) f(A)^T + force_weight (1/N_F) sum_(i, alpha) g g^T

(the MSE loss's own weighting of energies and forces), and the predicted variances are

    sigma_E^2 = alpha^2 f^T (H + varsigma^2 I)^-1 f,
    sigma_F^2 = alpha^2 g^T (H + varsigma^2 I)^-1 g

for the energy per atom and each force component (times energy_scale^2). The two
calibration constants are fitted on the calibration split (disjoint from the val split
that picks the best weights; val where there is none): for each varsigma^2 on a grid
(``regulariser_grid``, relative to the mean eigenvalue of H) alpha^2 has the closed form
that minimises that split's Gaussian NLL; the pair with the lowest NLL (energy +
force_weight x forces, as the loss) is kept. The prediction is a Gaussian per target; the
forces' std needs one backward pass per feature (``L``, the readout width) at prediction.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from uqbench.backbones.adapter import BackboneWrapper, energy_and_forces
from uqbench.backbones.graph import at_energy_labels, at_force_labels
from uqbench.strategies.base import TorchUQMethod

#: varsigma^2 over the mean eigenvalue of H, tried on validation.
REGULARISER_GRID = tuple(10.0 ** k for k in range(-8, 3))


class LastLayer(BackboneWrapper):
    """A trained backbone with its last-layer features exposed and the LLPR state (the
    inverse of the regularised Hessian and the calibration constant) as buffers."""

    def __init__(self, backbone: nn.Module, adapter) -> None:
        super().__init__()
        if getattr(backbone, "direct_forces", False):
            raise ValueError("LLPR's force variances are gradients of the energy's last-layer "
                             "features: it needs a conservative backbone, not a direct-force "
                             "one")
        self.backbone = backbone
        self._adapter = adapter
        readout = adapter.readout(backbone)
        layers = list(readout) if isinstance(readout, nn.Sequential) else []
        while layers and isinstance(layers[-1], nn.Identity):  # (Orb's output "activation")
            layers.pop()
        linears = [m for m in readout.modules() if isinstance(m, nn.Linear)]
        if not layers or layers[-1] is not linears[-1]:
            raise ValueError("LLPR needs a readout that is an nn.Sequential ending in its "
                             "last Linear layer")
        # (a plain list: the layers are the backbone's own, registered there once)
        self._before_last = layers[:-1]
        width = linears[-1].in_features
        self.register_buffer("inverse", torch.zeros(width, width))
        self.register_buffer("alpha2", torch.ones(()))

    def forward(self, batch, **kwargs) -> torch.Tensor:
        return self.backbone(batch, **kwargs)

    def features(self, batch, positions: torch.Tensor) -> torch.Tensor:
        """Pooled last-layer features per structure [n_structures, L] at ``positions``."""
        from dataclasses import replace

        batch = replace(batch, positions=positions)
        h = self._adapter.node_features(self.backbone, batch)
        return self._adapter.pool_readout(self.backbone, batch, h, self._last_layer_features)

    def _last_layer_features(self, h: torch.Tensor) -> torch.Tensor:
        for layer in self._before_last:
            h = layer(h)
        return h

    def feature_gradients(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-atom-mean features f [n_structures, L] and their position gradients g
        [n_atoms, 3, L] (of the summed features, the force's row)."""
        positions = batch.positions.detach().requires_grad_(True)
        with torch.enable_grad():
            summed = self.features(batch, positions)
            rows = []
            # one backward pass per feature (batching them with is_grads_batched measured
            # 2-3 times slower on the CPU)
            for k in range(summed.shape[1]):
                (grad,) = torch.autograd.grad(summed[:, k].sum(), positions,
                                              retain_graph=k + 1 < summed.shape[1])
                rows.append(grad)
        n = batch.n_atoms.to(summed.dtype)
        return summed.detach() / n[:, None], torch.stack(rows, dim=-1)


class LLPR(TorchUQMethod):
    """LLPR-<backbone>: the deterministic backbone with last-layer prediction-rigidity
    variances calibrated on validation (parametric)."""

    parametric = True

    def wrap(self, backbone: nn.Module) -> nn.Module:
        return LastLayer(backbone, self.adapter)

    def fit_member(self, member, train_items, val_items):
        """The deterministic fit (the whole budget), then the Hessian on the training set
        and the constants on the calibration split (on val where there is none; no
        optimiser steps)."""
        backbone = self.new_backbone(train_items, member)
        history = self.train_stage(backbone, train_items, val_items, self.loss,
                                   self.max_epochs, self.lr, member, "training")
        model = self.wrap(backbone).to(self.device_, self.torch_dtype)
        model.eval()
        hessian = self._hessian(model, train_items)
        calibration = getattr(self, "calibration_items_", None)
        self.calibration_ = self._calibrate(model, hessian,
                                            calibration or val_items or train_items)
        self.calibration_["fitted_on"] = ("calibration" if calibration else
                                          "val" if val_items else "train (no val split)")
        return model, history

    def fitted_info(self) -> dict:
        return {"calibration": getattr(self, "calibration_", None)}

    def _batches_of(self, items):
        from uqbench.training import batches

        return batches(items, 4 * self.batch_size, self.device_, self.torch_dtype)

    def _hessian(self, model: LastLayer, items: list[dict]) -> torch.Tensor:
        width = model.inverse.shape[0]
        e_part = torch.zeros(width, width, dtype=torch.float64, device=self.device_)
        f_part = torch.zeros_like(e_part)
        n_e = n_f = 0
        for batch in self._batches_of(items):
            f, g = (x.double() for x in model.feature_gradients(batch))
            (f,) = at_energy_labels(batch, f)
            (g,) = at_force_labels(batch, g)
            g = g.reshape(-1, width)
            e_part += f.T @ f
            f_part += g.T @ g
            n_e, n_f = n_e + f.shape[0], n_f + g.shape[0]
        return e_part / max(n_e, 1) + self.force_weight * f_part / max(n_f, 1)

    def _calibrate(self, model: LastLayer, hessian: torch.Tensor, items: list[dict]) -> dict:
        """Choose varsigma^2 on the grid and alpha^2 in closed form by validation NLL."""
        width = hessian.shape[0]
        mean_eig = float(torch.trace(hessian)) / width or 1.0
        parts = []  # per batch: energy (err^2, f), force (err^2, g)
        for batch in self._batches_of(items):
            e, frc = (x.detach().double() for x in energy_and_forces(model, batch)[:2])
            f, g = (x.double() for x in model.feature_gradients(batch))
            scale = float(model.energy_scale)
            e_err, f = at_energy_labels(batch, (e - batch.energy.double()) / batch.n_atoms
                                        / scale, f)
            f_err, g = at_force_labels(batch, (frc - batch.forces.double()) / scale, g)
            parts.append((e_err, f, f_err.reshape(-1), g.reshape(-1, width)))
        best = None
        for rel in REGULARISER_GRID:
            reg = rel * mean_eig
            inverse = torch.linalg.inv(hessian + reg * torch.eye(width, dtype=hessian.dtype,
                                                                 device=hessian.device))
            z2 = {"energy": [], "forces": []}
            logv = {"energy": [], "forces": []}
            for e_err, f, f_err, g in parts:
                for key, err, rows in (("energy", e_err, f), ("forces", f_err, g)):
                    v = ((rows @ inverse) * rows).sum(-1).clamp_min(1e-300)
                    z2[key].append(err**2 / v)
                    logv[key].append(torch.log(v))
            z2 = {k: torch.cat(v) for k, v in z2.items()}
            logv = {k: torch.cat(v) for k, v in logv.items()}
            # one alpha^2 for both targets: the minimiser of the weighted NLL
            w = {"energy": 1.0 / max(z2["energy"].numel(), 1),
                 "forces": self.force_weight / max(z2["forces"].numel(), 1)}
            total_w = sum(w[k] * z2[k].numel() for k in z2)
            alpha2 = float(sum(w[k] * z2[k].sum() for k in z2) / total_w)
            nll = sum(w[k] * 0.5 * (math.log(alpha2) * z2[k].numel() + logv[k].sum()
                                    + z2[k].sum() / alpha2) for k in z2)
            nll = float(nll)
            if np.isfinite(nll) and (best is None or nll < best[0]):
                best = (nll, rel, alpha2, inverse)
        nll, rel, alpha2, inverse = best
        with torch.no_grad():
            model.inverse.copy_(inverse.to(model.inverse.dtype))
            model.alpha2.fill_(alpha2)
        return {"regulariser_relative": rel, "regulariser": rel * mean_eig,
                "alpha2": alpha2, "nll": nll}

    def predict_gaussian(self, batch):
        model = self.models_[0]
        e, frc = energy_and_forces(model, batch)[:2]
        f, g = model.feature_gradients(batch)
        inverse = model.inverse.to(f.dtype)
        var_e = ((f @ inverse) * f).sum(-1) * model.alpha2
        var_f = ((g @ inverse) * g).sum(-1) * model.alpha2
        scale = model.energy_scale
        n = batch.n_atoms.to(e.dtype)
        return (e.detach(), scale * n * var_e.clamp_min(0).sqrt(), frc.detach(),
                scale * var_f.clamp_min(0).sqrt())

