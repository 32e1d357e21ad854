"""What pretrained (foundation) backbones share: an energy offset fitted to the new labels.

A foundation model predicts energies on its own reference (e.g. DFT total energies), which a
new dataset need not share (BKS silica sits ~10 eV/atom below PBE). Its wrapper adds a
per-atom shift, fitted as the mean per-atom residual of the pretrained model on the training
set, so finetuning starts from the pretrained forces and a matching energy zero.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from uqbench.backbones.adapter import BackboneAdapter, force_rms, labelled_mean
from uqbench.backbones.graph import collate
from uqbench.errors import UQBenchError


class FoundationBackbone(nn.Module):
    """Base wrapper: ``forward(batch)`` = the wrapped model's energies + shift x n_atoms."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("energy_shift", torch.zeros(()))
        # The loss unit (training force RMS); the model's output does not depend on it.
        self.register_buffer("energy_scale", torch.ones(()))

    def raw_energy(self, batch) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, batch) -> torch.Tensor:
        return self.raw_energy(batch) + self.energy_shift * batch.n_atoms


class FoundationAdapter(BackboneAdapter):
    """Adapter base for pretrained backbones (periodic cells, float32 by default)."""

    def resolve(self, structures) -> dict:
        if not all(a.pbc.all() for a in structures):
            raise UQBenchError(f"backbone {self.name!r} needs periodic cells (pbc on all three "
                               "axes); this dataset has non-periodic structures")
        return dict(self.options)

    def fit_normalisation(self, model: nn.Module, items: list[dict]) -> None:
        """Shift = mean per-atom residual (label - pretrained prediction) on ``items``."""
        param = next(model.parameters())
        residuals = []
        model.energy_shift.zero_()
        was_training = model.training
        model.eval()  # no dropout while measuring the offset
        with torch.no_grad():
            for start in range(0, len(items), 16):
                chunk = items[start:start + 16]
                batch = collate(chunk, param.dtype).to(param.device)
                pred = model(batch).double().cpu().numpy()
                n = np.array([len(it["numbers"]) for it in chunk])
                residuals.extend((np.array([it["energy"][0] for it in chunk]) - pred) / n)
        model.train(was_training)
        residuals = np.array(residuals)
        model.energy_shift.fill_(labelled_mean(residuals))
        model.energy_scale.fill_(force_rms(items, residuals))


def load_plain(path: str, what: str):
    """A checkpoint read as data only (``torch.load(weights_only=True)``: tensors, numbers,
    strings and containers; never code); one `UQBenchError` line for anything else."""
    import pickle

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError, TypeError,
            AttributeError, ImportError) as exc:
        kind = type(exc).__name__
        raise UQBenchError(f"cannot read {what} weights {path}: not a checkpoint of plain "
                           f"tensors and numbers ({kind}; files are never unpickled as "
                           "code)") from None
