"""EGNN (Satorras, Hoogeboom, Welling 2021) as an energy model with autograd forces.

Messages depend on invariant features only (node states, a radial basis of |r_ij|, EGNN's
squared distance and the edge attribute q_i q_j), as in EGNN's QM9 setup where positions
are not updated, so the energy is invariant to rotations, reflections, translations and
permutations, and forces F = -dE/dx are equivariant. Energy = sum of atom energies. With a
finite ``cutoff`` the graph holds periodic images, so the same code serves molecules and
crystals.
"""

from __future__ import annotations

import torch
from torch import nn

from uqbench.backbones.graph import GraphBatch
from uqbench.nn import MLP, GaussianRBF, cosine_envelope

N_ELEMENTS = 119  # atomic numbers 0 (ASE's dummy "X") to 118


class EGNNLayer(nn.Module):
    def __init__(self, hidden: int, n_rbf: int, dropout: float) -> None:
        super().__init__()
        self.message = MLP(2 * hidden + n_rbf + 2, hidden, hidden, dropout, final_activation=True)
        self.update = MLP(2 * hidden, hidden, hidden, dropout)

    def forward(self, h: torch.Tensor, src: torch.Tensor, dst: torch.Tensor,
                edge_feat: torch.Tensor, envelope: torch.Tensor | None) -> torch.Tensor:
        m = self.message(torch.cat([h[dst], h[src], edge_feat], dim=-1))
        if envelope is not None:
            m = m * envelope[:, None]
        agg = torch.zeros_like(h).index_add_(0, dst, m)
        return h + self.update(torch.cat([h, agg], dim=-1))


class EGNN(nn.Module):
    """Invariant EGNN energy model. Hyperparameters are the constructor's keywords."""

    def __init__(self, hidden: int = 64, n_layers: int = 4, n_rbf: int = 16,
                 r_max: float = 10.0, cutoff: float | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        self.cutoff = cutoff
        self.r_max = cutoff if cutoff is not None else r_max
        self.embed = nn.Embedding(N_ELEMENTS, hidden)
        self.charge_embed = nn.Linear(1, hidden, bias=False)
        self.rbf = GaussianRBF(n_rbf, self.r_max)
        self.layers = nn.ModuleList(EGNNLayer(hidden, n_rbf, dropout) for _ in range(n_layers))
        self.readout = MLP(hidden, hidden, 1, dropout)
        # Target normalisation, fitted on the training set: E = scale * sum(out) + shift * n.
        self.register_buffer("energy_shift", torch.zeros(()))
        self.register_buffer("energy_scale", torch.ones(()))

    def features(self, batch: GraphBatch) -> tuple[torch.Tensor, ...]:
        """Initial node features [n_atoms, hidden], edge features [n_edges, n_rbf + 2] and
        the cutoff envelope [n_edges] (None without a cutoff): the invariant inputs of the
        first layer."""
        vec = batch.positions[batch.src] - batch.positions[batch.dst] + batch.shift
        r = torch.sqrt((vec * vec).sum(-1) + 1e-12)
        edge_attr = (batch.charges[batch.src] * batch.charges[batch.dst])[:, None]
        r2 = (r * r / self.r_max**2)[:, None]  # EGNN's own |x_i - x_j|^2 input, scaled
        edge_feat = torch.cat([self.rbf(r), r2, edge_attr], dim=-1)
        h = self.embed(batch.numbers) + self.charge_embed(batch.charges[:, None])
        return h, edge_feat, cosine_envelope(r, self.cutoff)

    def node_states(self, batch: GraphBatch) -> torch.Tensor:
        """The final node states [n_atoms, hidden], what the readout sees."""
        h, edge_feat, envelope = self.features(batch)
        for layer in self.layers:
            h = layer(h, batch.src, batch.dst, edge_feat, envelope)
        return h

    def forward(self, batch: GraphBatch) -> torch.Tensor:
        """Energy of each structure [n_structures] (eV)."""
        h = self.node_states(batch)
        atom_energy = self.readout(h).squeeze(-1) * self.energy_scale + self.energy_shift
        return torch.zeros(batch.n_structures, dtype=h.dtype, device=h.device).index_add_(
            0, batch.structure, atom_energy
        )
