"""What pretrained (foundation) backbones share: energy references refitted to the new labels.

A foundation model predicts energies on its own reference (e.g. DFT total energies), which a
new dataset need not share (BKS silica sits ~10 eV/atom below PBE; a molecular set may give
atomisation energies). Before finetuning, its wrapper's per-element reference energies are
refitted by least squares on the training set's residuals (label - pretrained prediction):
a per-atom shift (the mean per-atom residual) plus, per element, the minimum-norm correction
that the training compositions determine (none where every structure has one stoichiometry,
where only the per-atom shift is identifiable). Finetuning then starts from the pretrained
forces and a matching energy zero for every element, the standard step when a model trained
on one DFT setup meets another.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from uqbench.backbones.adapter import BackboneAdapter, force_rms, labelled_mean
from uqbench.backbones.egnn import N_ELEMENTS
from uqbench.backbones.graph import collate
from uqbench.errors import UQBenchError


class FoundationBackbone(nn.Module):
    """Base wrapper: ``forward(batch)`` = the wrapped model's energies + `offset`."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("energy_shift", torch.zeros(()))
        self.register_buffer("element_shift", torch.zeros(N_ELEMENTS))
        # The loss unit (training force RMS); the model's output does not depend on it.
        self.register_buffer("energy_scale", torch.ones(()))

    def raw_energy(self, batch) -> torch.Tensor:
        raise NotImplementedError

    def offset(self, batch) -> torch.Tensor:
        """The refitted reference energy of each structure [n_structures]: shift x n_atoms
        plus the per-element corrections of its atoms."""
        per_atom = self.energy_shift + self.element_shift[batch.numbers]
        return torch.zeros(batch.n_structures, dtype=per_atom.dtype,
                           device=per_atom.device).index_add(0, batch.structure, per_atom)

    def forward(self, batch) -> torch.Tensor:
        return self.raw_energy(batch) + self.offset(batch)


class FoundationAdapter(BackboneAdapter):
    """Adapter base for pretrained backbones (periodic cells, float32 by default)."""

    def resolve(self, structures) -> dict:
        if not all(a.pbc.all() for a in structures):
            raise UQBenchError(f"backbone {self.name!r} needs periodic cells (pbc on all three "
                               "axes); this dataset has non-periodic structures")
        return dict(self.options)

    def fit_normalisation(self, model: nn.Module, items: list[dict]) -> None:
        """Reference energies refitted on ``items`` (see the module docstring): the per-atom
        shift is the mean per-atom residual (label - pretrained prediction), and the
        per-element corrections the minimum-norm least-squares fit of what is left of the
        total-energy residuals on the structures' compositions."""
        param = next(model.parameters())
        residuals, totals, compositions = [], [], []
        model.energy_shift.zero_()
        model.element_shift.zero_()
        was_training = model.training
        model.eval()  # no dropout while measuring the offset
        with torch.no_grad():
            for start in range(0, len(items), 16):
                chunk = items[start:start + 16]
                batch = collate(chunk, param.dtype).to(param.device)
                pred = model(batch).double().cpu().numpy()
                n = np.array([len(it["numbers"]) for it in chunk])
                total = np.array([it["energy"][0] for it in chunk]) - pred
                residuals.extend(total / n)
                totals.extend(total)
                compositions.extend(np.bincount(it["numbers"], minlength=N_ELEMENTS)
                                    for it in chunk)
        model.train(was_training)
        residuals = np.array(residuals)
        shift = labelled_mean(residuals)
        model.energy_shift.fill_(shift)
        model.energy_scale.fill_(force_rms(items, residuals))
        totals, counts = np.array(totals), np.array(compositions, dtype=float)
        ok = np.isfinite(totals)
        if ok.sum() >= 2:
            left = totals[ok] - counts[ok].sum(axis=1) * shift
            correction, *_ = np.linalg.lstsq(counts[ok], left, rcond=None)
            model.element_shift.copy_(torch.as_tensor(correction, dtype=param.dtype))


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
