"""CHGNet (Deng et al. 2023, package ``chgnet``) as a backbone, on the pretrained weights
that ship inside its wheel (no download).

The model runs on CHGNet's own graphs (atom graph within 6 Å, angle graph of bonds within
3 Å); uqbench's batch carries the atom graph as its edges (``dst`` = centre, ``src`` =
neighbour) and each structure's `CrystalGraph` in ``extras``. Positions enter through the
fractional coordinates, so forces are -dE/dx by autograd through CHGNet's whole featuriser.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
from torch import nn

from uqbench.backbones.adapter import Site, linear_sites
from uqbench.backbones.foundation import FoundationAdapter, FoundationBackbone, load_plain
from uqbench.backbones.graph import check_density, graph_item_from_edges
from uqbench.errors import UQBenchError
from uqbench.progress import note

#: CHGNet's atom-graph cutoff (Å): the graph converter's default, which the pretrained
#: model's converter uses.
CHGNET_CUTOFF = 6.0

DEFAULT_MODEL = "0.3.0"  # the version whose weights chgnet 0.4 ships


class CHGNetBackbone(FoundationBackbone):
    """A `chgnet.model.CHGNet` whose energy is a differentiable function of batch positions."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def raw_energy(self, batch) -> torch.Tensor:
        from chgnet.model.model import BatchedGraph

        inv_cell = torch.linalg.inv(batch.cell)
        frac = torch.einsum("ai,aij->aj", batch.positions, inv_cell[batch.structure])
        graphs = []
        for graph, frac_s, cell in zip(batch.extras, torch.split(frac, batch.n_atoms.tolist()),
                                       batch.cell, strict=True):
            graph = copy.copy(graph)
            graph.atom_frac_coord = frac_s
            graph.lattice = cell
            graphs.append(graph)
        m = self.model
        with warnings.catch_warnings():
            # CHGNet's lattices carry requires_grad (for its stress); harmless here.
            warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad")
            batched = BatchedGraph.from_graphs(
                graphs, bond_basis_expansion=m.bond_basis_expansion,
                angle_basis_expansion=m.angle_basis_expansion)
        energy = m._compute(batched)["e"]
        if m.composition_model is not None:
            energy = energy + m.composition_model(graphs)
        # CHGNet's pretrained model is intensive: both terms are per atom.
        return energy * batch.n_atoms if m.is_intensive else energy


def read_checkpoint(path: str) -> dict:
    """The model part of a CHGNet checkpoint (``{"model": {"model_args", "state_dict"}}``, as
    CHGNet and its trainer save it, or that part alone), read as data only: chgnet's own
    ``CHGNet.from_file`` unpickles arbitrary objects, which would run code from the file."""
    state = load_plain(path, "CHGNet")
    model = state.get("model", state) if isinstance(state, dict) else None
    if not (isinstance(model, dict) and isinstance(model.get("model_args"), dict)
            and isinstance(model.get("state_dict"), dict)):
        raise UQBenchError(f"{path} is not a CHGNet checkpoint (expected model_args and "
                           "state_dict)")
    return model


class CHGNetAdapter(FoundationAdapter):
    """Options: ``model`` (a version shipped with chgnet, default 0.3.0), ``weights`` (a
    CHGNet checkpoint file, overrides ``model``), ``dropout`` (p of every dropout layer)."""

    name = "chgnet"

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {"model": DEFAULT_MODEL, "weights": None, "dropout": 0.0}

    def __init__(self, options: dict[str, Any]) -> None:
        super().__init__(options)
        self._pretrained: nn.Module | None = None

    def _load(self) -> nn.Module:
        """The pretrained model, read once per adapter (members and predictions copy it)."""
        if self._pretrained is None:
            note("loading CHGNet weights (%s)", self.options.get("weights") or "pretrained")
            self._pretrained = self._read()
            note("CHGNet weights loaded")
        return self._pretrained

    def check_available(self) -> None:
        self._library()
        if self.options.get("weights"):
            read_checkpoint(str(self.options["weights"]))

    @staticmethod
    def _library():
        try:
            from chgnet.model import CHGNet
        except ImportError as exc:  # chgnet itself, or one of its dependencies (pymatgen)
            raise UQBenchError(f"the chgnet backbone needs the chgnet package ({exc.name or exc}"
                               " is missing): pip install 'uqbench[chgnet]'") from None
        return CHGNet

    def _read(self) -> nn.Module:
        CHGNet = self._library()  # noqa: N806 (a class)
        weights = self.options.get("weights")
        if weights:
            return CHGNet.from_dict(read_checkpoint(str(weights)), verbose=False)
        return CHGNet.load(model_name=self.options.get("model", DEFAULT_MODEL), verbose=False,
                           use_device="cpu")

    def build(self) -> nn.Module:
        model = copy.deepcopy(self._load())
        p = float(self.options.get("dropout", 0.0))
        for layer in model.modules():
            if isinstance(layer, nn.Dropout):
                layer.p = p
        return CHGNetBackbone(model)

    def check_dtype(self, dtype: torch.dtype) -> None:
        if dtype != torch.float32:
            raise UQBenchError("CHGNet runs in float32 only (its graph code fixes the dtype)")

    def check_structures(self, structures) -> None:
        for atoms in structures:
            check_density(atoms, CHGNET_CUTOFF)

    def graph_items(self, structures) -> list[dict]:
        from pymatgen.io.ase import AseAtomsAdaptor

        converter = self._load().graph_converter
        items = []
        for atoms in structures:
            if atoms.numbers.max(initial=1) > 94:
                raise UQBenchError("CHGNet knows elements H (1) to Pu (94) only")
            check_density(atoms, CHGNET_CUTOFF)
            graph = converter(AseAtomsAdaptor.get_structure(atoms))
            ag = graph.atom_graph.numpy()
            item = graph_item_from_edges(atoms, src=ag[:, 1], dst=ag[:, 0],
                                         unit_shift=graph.neighbor_image.numpy())
            item["extra"] = graph
            items.append(item)
        return items

    def prepare_member(self, model: nn.Module, member: int) -> None:
        """Ensemble members from one checkpoint: each redraws the last layer of the energy
        readout (seeded by the member), then all weights are finetuned."""
        last = [m for m in model.model.mlp.modules() if isinstance(m, nn.Linear)][-1]
        last.reset_parameters()

    def node_features(self, model: nn.Module, batch) -> torch.Tensor:
        """The atom states CHGNet's readout MLP reads (after its last convolution and
        readout norm), taken by a forward hook on that MLP: CHGNet computes them inside one
        call (``_compute``), which this does not re-implement."""
        m = model.model
        if not m.mlp_first:
            raise ValueError("this CHGNet pools atom states before its readout "
                             "(mlp_first = False): it has no per-atom readout to expose")
        seen: list[torch.Tensor] = []
        handle = m.mlp.register_forward_hook(lambda module, args, out: seen.append(args[0]))
        try:
            model.raw_energy(batch)
        finally:
            handle.remove()
        return seen[0]

    def readout(self, model: nn.Module) -> nn.Module:
        """CHGNet's readout MLP (its layers: Linear/SiLU blocks ending in Linear -> 1)."""
        return model.model.mlp.layers

    def energy_from_readout(self, model: nn.Module, batch,
                            pooled: torch.Tensor) -> torch.Tensor:
        """CHGNet's energy: the summed site energies (its pooling is a sum), plus its
        composition model (per atom for the intensive model) and the fitted shift."""
        m = model.model
        n = batch.n_atoms.to(pooled.dtype)
        energy = pooled
        if m.composition_model is not None:
            composition = m.composition_model(list(batch.extras)).to(pooled.dtype)
            energy = energy + (composition * n if m.is_intensive else composition)
        return energy + model.offset(batch)

    def norm_sites(self, model: nn.Module) -> list[Site]:
        m = model.model
        sites = []
        for layer in m.atom_conv_layers:  # rows: directed bonds of the atom graph
            sites += [Site(layer.twoBody_atom, "bn1", "edge"),
                      Site(layer.twoBody_atom, "bn2", "edge")]
        for layer in [*m.bond_conv_layers, *m.angle_layers]:  # rows: angles
            sites += [Site(layer.twoBody_bond, "bn1", "angle"),
                      Site(layer.twoBody_bond, "bn2", "angle")]
        sites.append(Site(m, "readout_norm", "atom"))
        return sites

    def row_structures(self, batch) -> dict[str, torch.Tensor]:
        n_angles = torch.tensor([len(g.bond_graph) if g.bond_graph.dim() > 1 else 0
                                 for g in batch.extras], device=batch.structure.device)
        angles = torch.repeat_interleave(
            torch.arange(batch.n_structures, device=batch.structure.device), n_angles)
        return {**super().row_structures(batch), "angle": angles}

    def message_update_sites(self, model: nn.Module) -> list[tuple[str, str, list[Site]]]:
        """CHGNet's atom convolutions: the gated message MLP (rows: bonds) and the output
        layer of the update (rows: atoms). Bond and angle updates stay deterministic."""
        groups = []
        for k, layer in enumerate(model.model.atom_conv_layers):
            gated = layer.twoBody_atom
            groups.append((f"atom_conv{k}.message", "edge",
                           linear_sites(gated.mlp_core.layers, "edge")
                           + linear_sites(gated.mlp_gate.layers, "edge")))
            groups.append((f"atom_conv{k}.update", "atom",
                           linear_sites(layer.mlp_out.layers, "atom")))
        return groups

    def invariant_inputs(self, model: nn.Module, batch) -> tuple[torch.Tensor, torch.Tensor]:
        m = model.model
        vec = batch.positions[batch.src] - batch.positions[batch.dst] + batch.shift
        dist = torch.sqrt((vec * vec).sum(-1) + 1e-12)
        h0 = m.atom_embedding(batch.numbers - 1)
        return h0, m.bond_basis_expansion.rbf_expansion_ag(dist)

    def invariant_dims(self, model: nn.Module) -> tuple[int, int]:
        m = model.model
        return m.atom_embedding.embedding.embedding_dim, m.bond_embedding.in_features

