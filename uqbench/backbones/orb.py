"""Orb-v3 (Rhodes et al. 2025, package ``orb-models``) as a backbone.

Pretrained models come through orb-models' own loaders and download cache
(``ORB_PRETRAINED_MODELS``); ``weights`` names a local checkpoint instead (a state dict as
orb-models saves it), whose architecture is read off its tensor shapes and loaded through
orb-models' ``load_model``. Graphs are Orb's own (k nearest neighbours within 6 Å); the
batch carries them as its edges (``src`` = receiver, ``dst`` = sender) and each structure's
``AtomGraphs`` in ``extras``, and the edge vectors are recomputed from the batch positions
so that forces of the conservative variant are -dE/dx (and its stress the strain
derivative) by autograd. The direct variant predicts forces and stress with heads (they are
not derivatives of E).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from uqbench.backbones.adapter import Site, linear_sites
from uqbench.backbones.foundation import FoundationAdapter, FoundationBackbone, load_plain
from uqbench.backbones.graph import graph_item_from_edges, structure_sum
from uqbench.dataset import FULL_FROM_VOIGT
from uqbench.errors import UQBenchError
from uqbench.progress import note

DEFAULT_MODEL = "orb-v3-conservative-inf-omat"
RADIUS = 6.0  # Å, every orb-v3 model


def _orb():
    try:
        from orb_models.forcefield import pretrained
    except ImportError as exc:  # orb-models itself, or one of its dependencies
        raise UQBenchError(f"the orb backbone needs orb-models ({exc.name or exc} is missing): "
                           "pip install 'uqbench[orb]'") from None
    return pretrained



def pretrained_url(loader) -> str | None:
    """Where orb-models downloads a pretrained model's checkpoint from (its loader's
    ``weights_path`` default), or None where the loader does not say."""
    import inspect

    param = inspect.signature(loader).parameters.get("weights_path")
    default = None if param is None else param.default
    return default if isinstance(default, str) and "://" in default else None


def cached_weights(url: str | None):
    """orb-models' cached copy of ``url`` (a path), or None where there is none."""
    if url is None:
        return None
    try:
        from cached_path import find_latest_cached
    except ImportError:
        return None
    return find_latest_cached(url)


def reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether ``url``'s host accepts a connection within ``timeout`` seconds (one try, so
    that an offline machine is told at once instead of after minutes of retries)."""
    import socket
    from urllib.parse import urlparse

    parts = urlparse(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False

class OrbBackbone(FoundationBackbone):
    """An orb-v3 regressor whose outputs are functions of the batch positions."""

    def __init__(self, model: nn.Module, direct: bool) -> None:
        super().__init__()
        self.model = model
        self.direct_forces = direct

    def graph(self, batch):
        """Orb's batched ``AtomGraphs`` with positions and edge vectors from ``batch``."""
        from orb_models.forcefield.base import batch_graphs

        graph = batch_graphs(list(batch.extras))
        vectors = batch.positions[batch.src] - batch.positions[batch.dst] + batch.shift
        graph.node_features["positions"] = batch.positions
        graph.edge_features["vectors"] = vectors
        return graph

    def raw_energy(self, batch) -> torch.Tensor:
        return self._outputs(batch)["energy"]

    def _outputs(self, batch) -> dict[str, torch.Tensor]:
        reg = self.model
        graph = self.graph(batch)
        if self.direct_forces:
            return reg.predict(graph)  # heads denormalised, pair repulsion added
        # ConservativeForcefieldRegressor.forward without its own autograd step.
        nodes = reg.model(graph)["node_features"]
        head = reg.heads["energy"]
        energy = head.denormalize(head(nodes, graph), graph)
        if reg.pair_repulsion:
            energy = energy + reg.pair_repulsion_fn(graph)["energy"]
        return {"energy": energy}

    def forward(self, batch, with_forces: bool = False, with_stress: bool = False):
        """Energies; with ``with_forces`` (direct variant) also the force head's forces and,
        with ``with_stress``, the stress head's stress [n_structures, 3, 3] (eV/Å^3)."""
        if not with_forces:
            return super().forward(batch)
        out = self._outputs(batch)
        energy = out["energy"] + self.offset(batch)
        if not with_stress:
            return energy, out["forces"]
        return energy, out["forces"], out["stress"][:, FULL_FROM_VOIGT]


def infer_architecture(state: dict[str, torch.Tensor]) -> tuple[str, dict[str, Any]]:
    """(variant, keywords of orb_v3_<variant>_architecture) read off a state dict."""

    def depth(prefix: str) -> int:
        return sum(1 for k in state if re.fullmatch(re.escape(prefix) + r"NN-\d+\.weight", k))

    try:
        latent = state["model.atom_emb.embeddings.weight"].shape[1]
        hidden = state["model._encoder._node_fn.mlp.NN-0.weight"].shape[0]
        head_hidden = state["heads.energy.mlp.NN-0.weight"].shape[0]
    except KeyError as exc:
        raise UQBenchError(f"not an orb-v3 checkpoint (no {exc.args[0]})") from None
    steps = len({k.split(".")[2] for k in state if k.startswith("model.gnn_stacks.")})
    variant = "direct" if "heads.forces.mlp.NN-0.weight" in state else "conservative"
    return variant, {
        "latent_dim": latent, "base_mlp_hidden_dim": hidden,
        "base_mlp_depth": depth("model._encoder._node_fn.mlp.") - 1,
        "head_mlp_hidden_dim": head_hidden, "head_mlp_depth": depth("heads.energy.mlp.") - 1,
        "num_message_passing_steps": steps,
    }


class OrbAdapter(FoundationAdapter):
    """Options: ``model`` (a key of orb-models' ``ORB_PRETRAINED_MODELS``, default
    orb-v3-conservative-inf-omat), ``weights`` (a local checkpoint; overrides the download),
    ``max_neighbors`` (Orb's k; default 20 for ``-20-`` models, else 120), ``dropout``
    (p of the dropout added after every hidden activation, for MC dropout)."""

    def check_available(self) -> None:
        """orb-models importable, and the weights readable: a checkpoint given with
        ``weights``, else the pretrained ones (downloaded once, or from orb-models' cache):
        offline without either, this is where the run stops, before any data is made."""
        _orb()
        self._load()

    name = "orb"

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {"model": DEFAULT_MODEL, "weights": None, "max_neighbors": None, "dropout": 0.0}

    def __init__(self, options: dict[str, Any]) -> None:
        super().__init__(options)
        self._pretrained: nn.Module | None = None

    @property
    def max_neighbors(self) -> int:
        default = 20 if "-20-" in str(self.options.get("model", DEFAULT_MODEL)) else 120
        return int(self.options.get("max_neighbors") or default)

    def _load(self) -> nn.Module:
        if self._pretrained is None:
            note("loading Orb weights (%s)", self.options.get("weights") or "pretrained")
            self._pretrained = self._read()
            note("Orb weights loaded")
        return self._pretrained

    def _read(self) -> nn.Module:
        pretrained = _orb()
        from orb_models.forcefield.atomic_system import SystemConfig

        weights = self.options.get("weights")
        if weights:
            state = load_plain(str(weights), "Orb")
            variant, arch = infer_architecture(state)
            build = getattr(pretrained, f"orb_v3_{variant}_architecture")
            model = build(**arch, system_config=SystemConfig(radius=RADIUS,
                                                             max_num_neighbors=self.max_neighbors))
            try:
                with warnings.catch_warnings():  # it announces the default dtype it sets
                    warnings.simplefilter("ignore", UserWarning)
                    return pretrained.load_model(model, str(weights), device="cpu",
                                                 compile=False, train=True)
            except RuntimeError as exc:
                raise UQBenchError(f"Orb weights {weights} do not fit an orb-v3 model: "
                                   f"{str(exc).splitlines()[0]}") from None
        name = self.options.get("model", DEFAULT_MODEL)
        if name not in pretrained.ORB_PRETRAINED_MODELS:
            raise UQBenchError(f"unknown Orb model {name!r}; known: "
                               f"{', '.join(pretrained.ORB_PRETRAINED_MODELS)}")
        loader = pretrained.ORB_PRETRAINED_MODELS[name]
        url = pretrained_url(loader)
        local = cached_weights(url)
        if local is None and url is not None and not reachable(url):
            raise UQBenchError(
                f"the {name} weights are not cached here and their host cannot be reached: "
                f"download {url} elsewhere and pass --weights PATH (-p "
                "backbone__weights=PATH), or run once online so that orb-models caches it")
        kwargs = {} if local is None else {"weights_path": str(local)}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                return loader(device="cpu", compile=False, train=True, **kwargs)
        except Exception as exc:  # noqa: BLE001 (cached_path raises many kinds offline)
            raise UQBenchError(
                f"cannot fetch the {name} weights ({type(exc).__name__}): download "
                f"{url or 'the checkpoint'} elsewhere and pass --weights PATH, or run once "
                "online so that orb-models caches it") from None

    def build(self) -> nn.Module:
        import copy

        model = copy.deepcopy(self._load())
        p = float(self.options.get("dropout", 0.0))
        if p > 0:
            for mlp in _mlps(model):
                acts = [n for n, _ in mlp.named_children() if n.startswith("Act-")]
                for name in acts[:-1]:  # hidden activations; the last one is the output's
                    mlp._modules[name] = nn.Sequential(mlp._modules[name], nn.Dropout(p))
        return OrbBackbone(model, direct="forces" in model.heads)

    def graph_items(self, structures) -> list[dict]:
        from orb_models.forcefield.atomic_system import SystemConfig, ase_atoms_to_atom_graphs

        config = SystemConfig(radius=RADIUS, max_num_neighbors=self.max_neighbors)
        items = []
        for atoms in structures:
            graph = ase_atoms_to_atom_graphs(atoms, config, wrap=False,
                                             output_dtype=torch.float32)
            item = graph_item_from_edges(atoms, src=graph.receivers.numpy(),
                                         dst=graph.senders.numpy(),
                                         unit_shift=graph.edge_features["unit_shifts"].numpy())
            item["extra"] = graph
            items.append(item)
        return items

    def prepare_member(self, model: nn.Module, member: int) -> None:
        """Ensemble members from one checkpoint: each redraws the last layer of the energy
        head (seeded by the member), then all weights are finetuned."""
        last = [m for m in model.model.heads["energy"].mlp.modules()
                if isinstance(m, nn.Linear)][-1]
        last.reset_parameters()

    def node_features(self, model: nn.Module, batch) -> torch.Tensor:
        """The atom states Orb's heads read (its GNS's ``node_features``)."""
        return model.model.model(model.graph(batch))["node_features"]

    def readout(self, model: nn.Module) -> nn.Module:
        """The energy head's MLP (``NN-i`` Linear / ``Act-i`` layers; it reads the mean (or
        summed) atom state of a structure, not each atom's)."""
        return model.model.heads["energy"].mlp

    def pool_readout(self, model: nn.Module, batch, h: torch.Tensor,
                     layers: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Orb's energy head pools first: n_atoms x layers(mean of h) for a head that
        predicts the average atom energy, layers(sum of h) for one that predicts the total."""
        head = model.model.heads["energy"]
        summed = structure_sum(batch, h)
        if not head.atom_avg:
            return layers(summed)
        n = batch.n_atoms.to(h.dtype)[:, None]
        return n * layers(summed / n)

    def energy_from_readout(self, model: nn.Module, batch,
                            pooled: torch.Tensor) -> torch.Tensor:
        """Orb's energy: the head's denormalisation (its normaliser, times n_atoms for an
        average-energy head, plus the reference energies), the pair repulsion where the
        model has one, and the fitted shift."""
        reg = model.model
        head = reg.heads["energy"]
        graph = model.graph(batch)
        n = batch.n_atoms.to(pooled.dtype)
        energy = head.denormalize(pooled / n if head.atom_avg else pooled, graph)
        if reg.pair_repulsion:
            energy = energy + reg.pair_repulsion_fn(graph)["energy"]
        return energy + model.offset(batch)

    def _stacks(self, model: nn.Module):
        gns = model.model.model
        return gns._encoder, list(gns.gnn_stacks)

    def norm_sites(self, model: nn.Module) -> list[Site]:
        encoder, stacks = self._stacks(model)
        sites = [Site(encoder._node_fn, "layer_norm", "atom"),
                 Site(encoder._edge_fn, "layer_norm", "edge")]
        for stack in stacks:
            sites += [Site(stack._edge_mlp, "layer_norm", "edge"),
                      Site(stack._node_mlp, "layer_norm", "atom")]
        return sites

    def message_update_sites(self, model: nn.Module) -> list[tuple[str, str, list[Site]]]:
        _, stacks = self._stacks(model)
        groups = []
        for k, stack in enumerate(stacks):
            groups.append((f"stack{k}.message", "edge", linear_sites(stack._edge_mlp.mlp, "edge")))
            groups.append((f"stack{k}.update", "atom", linear_sites(stack._node_mlp.mlp, "atom")))
        return groups

    def invariant_inputs(self, model: nn.Module, batch) -> tuple[torch.Tensor, torch.Tensor]:
        gns = model.model.model
        vec = batch.positions[batch.src] - batch.positions[batch.dst] + batch.shift
        dist = torch.sqrt((vec * vec).sum(-1) + 1e-12)
        return gns.atom_emb(batch.numbers), gns.rbf_transform(dist)

    def invariant_dims(self, model: nn.Module) -> tuple[int, int]:
        gns = model.model.model
        return gns.atom_emb.embeddings.embedding_dim, gns.rbf_transform.num_bases


def _mlps(model: nn.Module) -> list[nn.Module]:
    """Orb's MLPs: Sequentials of ``NN-i`` linear and ``Act-i`` activation layers."""
    return [m for m in model.modules() if isinstance(m, nn.Sequential)
            and any(n.startswith("NN-") for n, _ in m.named_children())]
