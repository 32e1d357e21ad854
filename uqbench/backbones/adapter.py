"""The adapter through which a UQ strategy reaches a backbone: build, graph, fit scales."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from ase import Atoms
from torch import nn

from uqbench.backbones.graph import check_density, graph_item, structure_sum

PERIODIC_CUTOFF = 5.0  # Å: EGNN's default cutoff for periodic structures


@dataclass
class Site:
    """A submodule slot ``getattr(parent, name)`` and the rows it sees (atom or edge)."""

    parent: nn.Module
    name: str
    domain: str

    def get(self) -> nn.Module:
        return self.parent._modules[self.name]

    def set(self, module: nn.Module) -> None:
        self.parent._modules[self.name] = module


class BackboneWrapper(nn.Module):
    """A module around a backbone (``self.backbone``) that meets the wrapper contract: it
    exposes the backbone's ``energy_scale`` and ``energy_shift`` (the loss unit and offset)
    and ``direct_forces``. Strategies' modules (and plugins') derive from it."""

    @property
    def energy_scale(self) -> torch.Tensor:
        return self.backbone.energy_scale

    @property
    def energy_shift(self) -> torch.Tensor:
        return self.backbone.energy_shift

    @property
    def direct_forces(self) -> bool:
        return getattr(self.backbone, "direct_forces", False)


class BackboneAdapter:
    """What strategies need from a backbone; one subclass per backbone.

    ``options`` are the backbone's keywords. The defaults here suit a backbone whose
    forward takes a `GraphBatch` built from uqbench's own neighbour list; foundation
    backbones (CHGNet, Orb) override graph building, normalisation and the sites.
    """

    name = ""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = dict(options)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """The backbone options and their defaults (what a method card lists)."""
        return {}

    def build(self) -> nn.Module:
        raise NotImplementedError

    def resolve(self, structures: list[Atoms]) -> dict[str, Any]:
        """Fill options that depend on the data; returns the options now in force."""
        return dict(self.options)

    def check_available(self) -> None:
        """Raise `UQBenchError` when the backbone cannot be used here (a missing extra);
        called before any data is generated, so it must be cheap."""

    def check_dtype(self, dtype: torch.dtype) -> None:
        """Raise `UQBenchError` when the backbone cannot run in ``dtype``."""

    def graph_items(self, structures: list[Atoms]) -> list[dict[str, np.ndarray]]:
        cutoff = self.options.get("cutoff")
        return [graph_item(a, cutoff) for a in structures]

    def check_structures(self, structures: list[Atoms]) -> None:
        """`UQBenchError` where a structure cannot be turned into this backbone's graph:
        here, a periodic cell too dense for the cutoff (`check_density`)."""
        for atoms in structures:
            check_density(atoms, self.options.get("cutoff"))

    def fit_normalisation(self, model: nn.Module, items: list[dict[str, np.ndarray]]) -> None:
        """Per-atom energy shift (mean) and scale (RMS of force components) from labels."""
        e_per_atom = np.array([it["energy"][0] / len(it["numbers"]) for it in items])
        model.energy_shift.fill_(labelled_mean(e_per_atom))
        model.energy_scale.fill_(force_rms(items, e_per_atom))

    def prepare_member(self, model: nn.Module, member: int) -> None:
        """Make ensemble member ``member`` differ from the others before training (fresh
        backbones differ already by their random initialisation)."""

    def norm_sites(self, model: nn.Module) -> list[Site]:
        """Every normalisation layer, with the domain of rows it normalises."""
        raise ValueError(f"backbone {self.name!r} exposes no normalisation layers")

    def message_update_sites(self, model: nn.Module) -> list[tuple[str, str, list[Site]]]:
        """The linear layers of each message and update function: (group, domain, sites)."""
        raise ValueError(f"backbone {self.name!r} exposes no message/update functions")

    def invariant_inputs(self, model: nn.Module, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Initial node features [n_atoms, d] and attributes of the edges ``batch.src`` ->
        ``batch.dst`` [n_edges, d_e] (what BLIP's inference net sees)."""
        raise ValueError(f"backbone {self.name!r} exposes no invariant inputs")

    def invariant_dims(self, model: nn.Module) -> tuple[int, int]:
        """Widths of the node features and edge attributes of `invariant_inputs`."""
        raise ValueError(f"backbone {self.name!r} exposes no invariant inputs")

    def row_structures(self, batch) -> dict[str, torch.Tensor]:
        """For each row domain of `norm_sites`, the structure index of every row."""
        return {"atom": batch.structure, "edge": batch.structure[batch.dst]}

    def node_features(self, model: nn.Module, batch) -> torch.Tensor:
        """The backbone's final per-atom states [n_atoms, F], before its readout (for a
        method's extra head). Backbones that expose them override this."""
        raise NotImplementedError(f"backbone {self.name!r} exposes no node features")

    def readout(self, model: nn.Module) -> nn.Module:
        """The backbone's energy readout on `node_features` (an ``nn.Sequential``, for
        readout ensembles and last-layer methods): pooled by `pool_readout`, its output
        gives the energy through `energy_from_readout`."""
        raise NotImplementedError(f"backbone {self.name!r} exposes no readout")

    def pool_readout(self, model: nn.Module, batch, h: torch.Tensor,
                     layers: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """``layers`` (the readout, a copy of it, or its first layers) applied to the atom
        states ``h`` as the backbone applies its readout, pooled per structure
        [n_structures, k]: here per atom, then summed over each structure's atoms."""
        return structure_sum(batch, layers(h))

    def energy_from_readout(self, model: nn.Module, batch,
                            pooled: torch.Tensor) -> torch.Tensor:
        """Energies [n_structures] (eV) from the pooled readout output [n_structures], an
        affine map: energy_scale x pooled + energy_shift x n_atoms here. For the backbone's
        own readout this is its energy (tested for every built-in backbone)."""
        return model.energy_scale * pooled + model.energy_shift * batch.n_atoms.to(pooled.dtype)

    def dropout_layers(self, model: nn.Module) -> list[nn.Dropout]:
        return [m for m in model.modules() if isinstance(m, nn.Dropout)]


def labelled_mean(values: np.ndarray) -> float:
    """The mean of the finite entries (NaN marks a missing label); 0 when there are none."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else 0.0


def force_rms(items: list[dict[str, np.ndarray]], e_per_atom: np.ndarray) -> float:
    """The loss unit: RMS of the training force components (else, with no force labels or
    only zero forces, the spread of the energies per atom; else 1)."""
    f = np.concatenate([it["forces"].ravel() for it in items])
    f, e = f[np.isfinite(f)], e_per_atom[np.isfinite(e_per_atom)]
    rms = float(np.sqrt(np.mean(f**2))) if f.size else 0.0
    return rms or (float(np.std(e)) if e.size > 1 else 0.0) or 1.0


class EGNNAdapter(BackboneAdapter):
    name = "egnn"

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        import inspect

        from uqbench.backbones.egnn import EGNN

        return {n: p.default for n, p in inspect.signature(EGNN).parameters.items()}

    def build(self) -> nn.Module:
        from uqbench.backbones.egnn import EGNN

        return EGNN(**self.options)

    def resolve(self, structures: list[Atoms]) -> dict[str, Any]:
        """EGNN without a cutoff connects all pairs, which periodic cells cannot have: there
        the cutoff defaults to `PERIODIC_CUTOFF`."""
        if self.options.get("cutoff") is None and any(a.pbc.any() for a in structures):
            self.options = {**self.options, "cutoff": PERIODIC_CUTOFF}
        return dict(self.options)

    def node_features(self, model: nn.Module, batch) -> torch.Tensor:
        return model.node_states(batch)

    def readout(self, model: nn.Module) -> nn.Module:
        return model.readout

    def norm_sites(self, model: nn.Module) -> list[Site]:
        sites = []
        for layer in model.layers:
            sites.append(Site(layer.message, "1", "edge"))
            sites.append(Site(layer.update, "1", "atom"))
        sites.append(Site(model.readout, "1", "atom"))
        return sites

    def message_update_sites(self, model: nn.Module) -> list[tuple[str, str, list[Site]]]:
        groups = []
        for k, layer in enumerate(model.layers):
            for fn, kind, domain in ((layer.message, "message", "edge"),
                                     (layer.update, "update", "atom")):
                groups.append((f"layer{k}.{kind}", domain, linear_sites(fn, domain)))
        return groups

    def invariant_inputs(self, model: nn.Module, batch) -> tuple[torch.Tensor, torch.Tensor]:
        h, edge_feat, _ = model.features(batch)
        return h, edge_feat

    def invariant_dims(self, model: nn.Module) -> tuple[int, int]:
        return model.embed.embedding_dim, model.rbf.centers.numel() + 2


def linear_sites(parent: nn.Module, domain: str = "") -> list[Site]:
    """Sites of the nn.Linear children of a Sequential-like module, in order."""
    return [Site(parent, name, domain) for name, m in parent.named_children()
            if isinstance(m, nn.Linear)]


#: Backbone key -> "module:class" of its adapter: the built-ins, registered like plugins in
#: the ``uqbench.backbones`` entry-point group (this table is the fallback where the package
#: metadata is not installed).
ADAPTERS = {
    "egnn": "uqbench.backbones.adapter:EGNNAdapter",
    "chgnet": "uqbench.backbones.chgnet:CHGNetAdapter",
    "orb": "uqbench.backbones.orb:OrbAdapter",
}


def backbones() -> dict[str, str]:
    """Every registered backbone: key -> "module:class" of its adapter (plugins through
    the ``uqbench.backbones`` entry-point group; nothing is imported here)."""
    from importlib.metadata import entry_points

    found = dict(ADAPTERS)
    for ep in entry_points(group="uqbench.backbones"):
        found.setdefault(ep.name, ep.value)
    return found


def make_adapter(name: str, options: dict[str, Any]) -> BackboneAdapter:
    """A fresh adapter of backbone ``name`` (a `BackboneAdapter` subclass, built-in or a
    plugin's) with ``options``; only that backbone's module is imported."""
    known = backbones()
    if name not in known:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(sorted(known))}")
    module, _, cls = known[name].partition(":")
    adapter = getattr(importlib.import_module(module), cls)
    if not (isinstance(adapter, type) and issubclass(adapter, BackboneAdapter)):
        raise ValueError(f"backbone {name!r} ({known[name]}) is not a BackboneAdapter")
    return adapter(options)


def energy_and_forces(model: nn.Module, batch, create_graph: bool = False,
                      with_stress: bool = False, **model_kwargs):
    """Energies [n_structures] and forces [n_atoms, 3]: -dE/dx for a conservative model,
    the force head's output for one with ``direct_forces``. With ``with_stress`` also the
    stress [n_structures, 3, 3] (eV/Å^3, ASE's sign): (1/V) dE/d(strain) by autograd through
    a homogeneous strain of positions, cell and periodic offsets (a direct model's head)."""
    if getattr(model, "direct_forces", False):
        return model(batch, with_forces=True, with_stress=with_stress, **model_kwargs)
    with torch.enable_grad():
        positions = batch.positions.detach().requires_grad_(True)
        if with_stress:
            strain = torch.zeros(batch.n_structures, 3, 3, dtype=positions.dtype,
                                 device=positions.device, requires_grad=True)
            energy = model(strained(batch, positions, strain), **model_kwargs)
            f_grad, s_grad = torch.autograd.grad(energy.sum(), [positions, strain],
                                                 create_graph=create_graph)
            volume = torch.linalg.det(batch.cell).abs()
            return energy, -f_grad, s_grad / volume[:, None, None]
        energy = model(replace(batch, positions=positions), **model_kwargs)
        (grad,) = torch.autograd.grad(energy.sum(), positions, create_graph=create_graph)
    return energy, -grad


def strained(batch, positions: torch.Tensor, strain: torch.Tensor):
    """``batch`` under the symmetric strain (strain + strain^T) / 2 of each structure:
    x -> x (1 + e), cell -> cell (1 + e), offsets -> offsets (1 + e)."""
    if batch.cell is None:
        raise ValueError("stress needs periodic cells")
    sym = 0.5 * (strain + strain.transpose(1, 2))
    eye = torch.eye(3, dtype=sym.dtype, device=sym.device)
    deform = eye + sym
    return replace(
        batch,
        positions=torch.einsum("ai,aij->aj", positions, deform[batch.structure]),
        cell=batch.cell @ deform,
        shift=torch.einsum("ei,eij->ej", batch.shift, deform[batch.structure[batch.dst]]),
    )
