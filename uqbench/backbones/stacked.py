"""K EGNNs of one architecture trained as one computation (stacked weights).

A deep ensemble's members, or the seeds of one sweep cell, are K copies of one small
network. Trained one after another, each optimiser step pays autograd's per-operation cost
K times for a few MFLOP of arithmetic. Here every weight gets a leading model axis
([K, ...]); the K models' batches are joined into one graph (`join`), each row (atom or
edge) knows its model, and every dense layer runs as one batched matmul over the model
axis. Forces are -dE/dx of the joined graph: a model's energy depends only on its own
atoms, so each model's forces are its own gradient. Adam(W) acts elementwise, so one
optimiser over the stacked weights is K independent optimisers (same steps, same
learning-rate schedule). `StackedEGNN.from_models` copies K built (initialised,
normalised) EGNNs in and `to_models` copies the trained weights back out, so the fitted
models are ordinary EGNNs, and a stacked fit from the same initialisation and batches
agrees with K separate fits to float tolerance (tested).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from uqbench.backbones.egnn import EGNN, N_ELEMENTS
from uqbench.backbones.graph import GraphBatch, collate
from uqbench.nn import cosine_envelope


class Rows:
    """The rows (atoms or edges) of a joined graph, grouped by model: ``model`` [R] is
    each row's model, in ascending order. `stack` gives [K, n, F] (n the most rows of any
    model; zero padding where models have fewer), `unstack` undoes it."""

    def __init__(self, model: torch.Tensor, k: int) -> None:
        counts = torch.bincount(model, minlength=k)
        self.k, self.n = k, int(counts.max()) if model.numel() else 0
        self.equal = bool((counts == self.n).all())
        if not self.equal:
            starts = torch.cumsum(counts, 0) - counts
            self.index = (model, torch.arange(model.numel(), device=model.device)
                          - starts[model])

    def stack(self, x: torch.Tensor) -> torch.Tensor:
        if self.equal:
            return x.reshape(self.k, self.n, x.shape[-1])
        out = x.new_zeros(self.k, self.n, x.shape[-1])
        return out.index_put(self.index, x)

    def unstack(self, y: torch.Tensor) -> torch.Tensor:
        if self.equal:
            return y.reshape(self.k * self.n, y.shape[-1])
        return y[self.index]


class StackedLinear(nn.Module):
    """K linear maps [K, d_in, d_out] (+ bias [K, d_out]) applied to the rows of their
    own model."""

    def __init__(self, k: int, d_in: int, d_out: int, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(k, d_in, d_out))
        self.bias = nn.Parameter(torch.zeros(k, d_out)) if bias else None

    def forward(self, x: torch.Tensor, rows: Rows) -> torch.Tensor:
        xs = rows.stack(x)
        out = (torch.bmm(xs, self.weight) if self.bias is None
               else torch.baddbmm(self.bias[:, None, :], xs, self.weight))
        return rows.unstack(out)

    def load(self, k: int, linear: nn.Linear) -> None:
        with torch.no_grad():
            self.weight[k].copy_(linear.weight.T)
            if self.bias is not None:
                self.bias[k].copy_(linear.bias)

    def state(self, k: int, prefix: str) -> dict[str, torch.Tensor]:
        out = {f"{prefix}weight": self.weight[k].T.detach().clone()}
        if self.bias is not None:
            out[f"{prefix}bias"] = self.bias[k].detach().clone()
        return out


class StackedMLP(nn.Module):
    """K copies of `uqbench.nn.MLP`: Linear -> LayerNorm -> SiLU -> Dropout -> Linear
    (-> SiLU), each model with its own weights."""

    def __init__(self, k: int, template: nn.Sequential) -> None:
        super().__init__()
        first, norm, _, dropout, last = list(template)[:5]
        self.first = StackedLinear(k, first.in_features, first.out_features)
        self.norm_weight = nn.Parameter(torch.ones(k, norm.normalized_shape[0]))
        self.norm_bias = nn.Parameter(torch.zeros(k, norm.normalized_shape[0]))
        self.eps = norm.eps
        self.p = dropout.p
        self.last = StackedLinear(k, last.in_features, last.out_features)
        self.final_activation = len(template) > 5

    def forward(self, x: torch.Tensor, rows: Rows) -> torch.Tensor:
        h = self.first(x, rows)
        h = F.layer_norm(h, h.shape[-1:], eps=self.eps)
        h = rows.unstack(rows.stack(h) * self.norm_weight[:, None, :]
                         + self.norm_bias[:, None, :])
        h = F.dropout(F.silu(h), self.p, self.training)
        h = self.last(h, rows)
        return F.silu(h) if self.final_activation else h

    def load(self, k: int, mlp: nn.Sequential) -> None:
        first, norm, _, _, last = list(mlp)[:5]
        self.first.load(k, first)
        self.last.load(k, last)
        with torch.no_grad():
            self.norm_weight[k].copy_(norm.weight)
            self.norm_bias[k].copy_(norm.bias)

    def state(self, k: int, prefix: str) -> dict[str, torch.Tensor]:
        return {**self.first.state(k, f"{prefix}0."),
                f"{prefix}1.weight": self.norm_weight[k].detach().clone(),
                f"{prefix}1.bias": self.norm_bias[k].detach().clone(),
                **self.last.state(k, f"{prefix}4.")}


class StackedLayer(nn.Module):
    """K copies of one `uqbench.backbones.egnn.EGNNLayer`: its message and update MLPs."""

    def __init__(self, k: int, layer: nn.Module) -> None:
        super().__init__()
        self.message = StackedMLP(k, layer.message)
        self.update = StackedMLP(k, layer.update)


class StackedEGNN(nn.Module):
    """K `EGNN` s of one architecture. ``forward(batch, structure_model)`` maps a joined
    batch (see `join`) and the model of each of its structures to energies [n_structures]
    (eV), each from its own model's weights."""

    def __init__(self, models: list[EGNN]) -> None:
        super().__init__()
        template = models[0]
        k = len(models)
        self.k = k
        self.cutoff, self.r_max = template.cutoff, template.r_max
        hidden = template.embed.embedding_dim
        self.embed = nn.Parameter(torch.empty(k, N_ELEMENTS, hidden))
        self.charge_embed = nn.Parameter(torch.empty(k, hidden))
        self.register_buffer("centers", template.rbf.centers.detach().clone())
        self.width = template.rbf.width
        self.layers = nn.ModuleList(StackedLayer(k, layer) for layer in template.layers)
        self.readout = StackedMLP(k, template.readout)
        self.register_buffer("energy_shift", torch.zeros(k))
        self.register_buffer("energy_scale", torch.ones(k))
        self.to(device=template.energy_scale.device, dtype=template.energy_scale.dtype)
        for i, model in enumerate(models):
            self.load(i, model)

    @classmethod
    def from_models(cls, models: list[EGNN]) -> StackedEGNN:
        """The stack of ``models`` (built, initialised and normalised; same architecture)."""
        return cls(models)

    def load(self, k: int, model: EGNN) -> None:
        """Model ``k`` of the stack becomes a copy of ``model``."""
        with torch.no_grad():
            self.embed[k].copy_(model.embed.weight)
            self.charge_embed[k].copy_(model.charge_embed.weight[:, 0])
            self.energy_shift[k] = model.energy_shift
            self.energy_scale[k] = model.energy_scale
        for stacked, layer in zip(self.layers, model.layers, strict=True):
            stacked.message.load(k, layer.message)
            stacked.update.load(k, layer.update)
        self.readout.load(k, model.readout)

    def state_dict_of(self, k: int) -> dict[str, torch.Tensor]:
        """Model ``k`` as an `EGNN` state dict."""
        out = {"embed.weight": self.embed[k].detach().clone(),
               "charge_embed.weight": self.charge_embed[k].detach().clone()[:, None],
               "rbf.centers": self.centers.clone(),
               "energy_shift": self.energy_shift[k].clone(),
               "energy_scale": self.energy_scale[k].clone()}
        for i, layer in enumerate(self.layers):
            out.update(layer.message.state(k, f"layers.{i}.message."))
            out.update(layer.update.state(k, f"layers.{i}.update."))
        out.update(self.readout.state(k, "readout."))
        return out

    def to_models(self, models: list[EGNN]) -> list[EGNN]:
        """``models`` (of the stack's architecture) loaded with the stack's weights."""
        for k, model in enumerate(models):
            model.load_state_dict(self.state_dict_of(k))
        return models

    def forward(self, batch: GraphBatch, structure_model: torch.Tensor) -> torch.Tensor:
        atom_model = structure_model[batch.structure]
        atoms, edges = Rows(atom_model, self.k), Rows(atom_model[batch.dst], self.k)
        vec = batch.positions[batch.src] - batch.positions[batch.dst] + batch.shift
        r = torch.sqrt((vec * vec).sum(-1) + 1e-12)
        edge_attr = (batch.charges[batch.src] * batch.charges[batch.dst])[:, None]
        rbf = torch.exp(-(((r[:, None] - self.centers) / self.width) ** 2))
        edge_feat = torch.cat([rbf, (r * r / self.r_max**2)[:, None], edge_attr], dim=-1)
        envelope = cosine_envelope(r, self.cutoff)
        h = (self.embed[atom_model, batch.numbers]
             + batch.charges[:, None] * self.charge_embed[atom_model])
        for layer in self.layers:
            m = layer.message(torch.cat([h[batch.dst], h[batch.src], edge_feat], dim=-1),
                              edges)
            if envelope is not None:
                m = m * envelope[:, None]
            agg = torch.zeros_like(h).index_add(0, batch.dst, m)
            h = h + layer.update(torch.cat([h, agg], dim=-1), atoms)
        atom_energy = (self.readout(h, atoms).squeeze(-1) * self.energy_scale[atom_model]
                       + self.energy_shift[atom_model])
        return torch.zeros(batch.n_structures, dtype=h.dtype, device=h.device).index_add(
            0, batch.structure, atom_energy)


def join(item_lists: list[list[dict]], dtype: torch.dtype,
         device: torch.device) -> tuple[GraphBatch, torch.Tensor]:
    """One batch of the K models' batches (model k's structures after model k-1's) and the
    model of each structure."""
    batch = collate([it for items in item_lists for it in items], dtype).to(device)
    model = torch.repeat_interleave(torch.arange(len(item_lists), device=device),
                                    torch.tensor([len(x) for x in item_lists], device=device))
    return batch, model


def can_stack(models: list[nn.Module]) -> str | None:
    """None where ``models`` can train stacked, else why not (one line)."""
    if len(models) < 2:
        return "one model"
    if not all(type(m) is EGNN for m in models):
        return "the backbone is not uqbench's EGNN"
    shapes = [[tuple(p.shape) for p in m.parameters()] for m in models]
    if any(s != shapes[0] for s in shapes) or len({(m.cutoff, m.r_max) for m in models}) > 1:
        return "the models differ in architecture"
    return None
