"""What every torch-based strategy shares: fitting members, batched prediction, save/load."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from torch import nn

from uqbench.backbones.adapter import BackboneAdapter, energy_and_forces, make_adapter
from uqbench.backbones.graph import collate
from uqbench.errors import UQBenchError
from uqbench.method import UQMethod
from uqbench.params import MAX_SAMPLES, SEED_MAX, Interval, Mapping, Optional, Options
from uqbench.prediction import Prediction
from uqbench.progress import Progress, note
from uqbench.training import SCHEDULES, mse_loss, resolve_device, train

#: Optimiser steps per model over all stages when a card says nothing else (the EGNN
#: cards' default and the nbody study's budget).
DEFAULT_STEPS = 2000

#: Edges per forward pass at prediction; bounds memory, and keeps passes cache-sized on CPU.
MAX_EDGES_PER_PASS = 200_000


#: Default ``lr_warmup`` of the methods whose later stage starts from trained weights
#: (BLIP's variational stage; MVE's, evidential's and the shallow ensemble's NLL stage): a
#: linear learning-rate warm-up over this fraction of the stage. Measured on silica-bks,
#: BLIP seed 0 (studies/silica-bks.yaml): without it one Adam step took the warm-started
#: network's val force RMSE from 0.33 to 1.6 eV/Å and the run collapsed; with 20 of 150
#: warm-up steps it peaked at 0.71 and ended at 0.40, with 50 it ended at 0.40.
LR_WARMUP = 0.15


class TorchUQMethod(UQMethod):
    """Base for methods whose fitted state is a list of torch modules (``models_``), on any
    backbone (EGNN, CHGNet, Orb, a plugin's) through its adapter. Exported as
    ``uqbench.TorchUQMethod``; a method written on it uses only the public hooks below.

    What a subclass provides (its own hyperparameters as keywords of ``__init__``, passing
    ``**kwargs`` on to this one):

    - a **sample-based** method overrides `sample` (energies ``[S, n]`` and forces
      ``[S, n_atoms, 3]`` of a batch) and, where it needs more than one model or stage,
      `n_models` and `fit_member`; `copies_per_pass` says how many replicas one pass holds;
    - a **parametric** method sets ``parametric = True`` and overrides `predict_gaussian`
      (means and standard deviations of a batch); it takes no ``n_samples``.

    Building blocks: `new_backbone` (a fresh backbone with its energy shift and scale
    fitted), `train_stage` (the shared loop: budget, best-validation weights, progress),
    `loss` (per-atom energy + force (+ stress) MSE over the labels present), `wrap` (the
    module around a backbone that is saved and loaded), `node_features` (the backbone's
    final per-atom states, for an extra head), and ``uqbench.energy_and_forces``.
    Prediction batches structures under an edge budget (`MAX_EDGES_PER_PASS`) for both
    kinds.

    The wrapper contract: a module passed to `train_stage` or kept in ``models_`` maps a
    `GraphBatch` to the energy of each structure (eV); it exposes the backbone's
    ``energy_scale`` and ``energy_shift`` buffers (the loss unit and offset) and, for a
    backbone with a direct force head, ``direct_forces = True`` (`BackboneWrapper` does).

    Budget: one number of optimiser steps per model over all of its training stages,
    `budget_steps`: ``max_steps`` (the cards' default, the same for every method of a
    backbone), or ``max_epochs`` passes over the training set where that is set and ends
    first. Stages get fractions of it (`stage_steps`), so every method spends the same
    steps by default; an ensemble's members each get the budget of one model. Each stage
    keeps its best-validation weights, and its learning rate follows ``lr_schedule`` over
    its steps (``cosine`` by default: a short budget converges too; ``constant``);
    ``patience`` (None by default: off) epochs without a better validation loss end a
    stage early and halve the learning rate after half as many (the plateau rule then
    replaces the schedule).
    """

    parameter_constraints = {
        "backbone_options": Mapping(),
        "max_epochs": Optional(Interval(int, 0)),
        "max_steps": Optional(Interval(int, 0)),
        "lr": Interval(float, 0, None, closed="neither"),
        "batch_size": Interval(int, 1),
        "force_weight": Interval(float, 0),
        "stress_weight": Interval(float, 0),
        "patience": Optional(Interval(int, 1)),
        "n_samples": Interval(int, 1, MAX_SAMPLES),
        "seed": Interval(int, 0, SEED_MAX),
        "device": Options(("auto", "cpu", "cuda")),
        "dtype": Options(("float32", "float64")),
        "lr_schedule": Options(SCHEDULES),
    }

    def __init__(
        self,
        backbone: str = "egnn",
        backbone_options: dict | None = None,
        max_epochs: int | None = None,
        max_steps: int | None = DEFAULT_STEPS,
        lr: float = 1e-3,
        batch_size: int = 32,
        force_weight: float = 1.0,
        stress_weight: float = 1.0,
        patience: int | None = None,
        n_samples: int = 32,
        seed: int = 0,
        device: str = "auto",
        dtype: str = "float32",
        lr_schedule: str = "cosine",
    ) -> None:
        self.backbone = backbone
        self.backbone_options = backbone_options
        self.max_epochs = max_epochs
        self.max_steps = max_steps
        self.lr = lr
        self.batch_size = batch_size
        self.force_weight = force_weight
        self.stress_weight = stress_weight
        self.patience = patience
        self.n_samples = n_samples
        self.seed = seed
        self.device = device
        self.dtype = dtype
        self.lr_schedule = lr_schedule

    #: True for a method that predicts means and standard deviations (`predict_gaussian`)
    #: rather than samples.
    parametric: bool = False

    #: True for a method whose models are each a plain backbone trained by the default
    #: `fit_member` (one MSE stage), such as a deep ensemble: `fit` then trains them
    #: together as one stacked computation (`fit_stacked`) where the backbone allows it,
    #: and one by one, saying why in the log, where it does not.
    stack_members: bool = False

    # -- pieces subclasses provide --------------------------------------------------------
    def backbone_settings(self) -> dict:
        return dict(self.backbone_options or {})

    def n_models(self) -> int:
        """How many models `fit` trains (each by `fit_member`): 1, or an ensemble's size."""
        return 1

    def sample(self, batch, n_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Energies [S, n_structures] and forces [S, n_atoms, 3] of one batch (sample-based
        methods)."""
        raise NotImplementedError(f"{type(self).__name__} draws no samples")

    def predict_gaussian(self, batch) -> tuple[torch.Tensor, ...]:
        """Energy mean and std [n_structures] and force mean and std [n_atoms, 3] of one
        batch (parametric methods)."""
        raise NotImplementedError(f"{type(self).__name__} is not parametric")

    def predict_parametric(self, batch) -> dict[str, torch.Tensor]:
        """One batch's predictive distribution as `Prediction` fields (parametric methods):
        ``energy_mean``/``energy_std`` [n_structures], ``forces_mean``/``forces_std``
        [n_atoms, 3], and optionally ``energy_df``/``forces_df`` (a Student-t) and
        ``energy_epistemic_std``/``forces_epistemic_std``. By default the Gaussian of
        `predict_gaussian`."""
        keys = ("energy_mean", "energy_std", "forces_mean", "forces_std")
        return dict(zip(keys, self.predict_gaussian(batch), strict=True))

    def fitted_info(self) -> dict:
        """What the fit chose beyond the weights (e.g. calibration constants), JSON-ready:
        recorded as the record's ``fitted``. Empty by default."""
        return {}

    def copies_per_pass(self, n_samples: int) -> int:
        """How many replicas of a chunk one forward pass holds (for chunk sizing)."""
        return 1

    def node_features(self, model: nn.Module, batch) -> torch.Tensor:
        """The backbone's final per-atom states [n_atoms, F] (before its readout) for the
        backbone inside ``model``: what an extra head (a variance, a last layer) reads."""
        return self.adapter.node_features(model, batch)

    # -- hyperparameters: the backbone's options nest as backbone__<option> ----------------
    def backbone_defaults(self) -> dict:
        """The backbone's options and their defaults (before this method's overrides)."""
        try:
            return type(make_adapter(self.backbone, {})).defaults()
        except ValueError:
            return {}

    def get_params(self, deep: bool = False) -> dict:
        """The hyperparameters; with ``deep``, also ``backbone__<option>`` for every option
        of the backbone (its default, or this method's override), scikit-learn style."""
        params = super().get_params()
        if self.parametric:  # draws no samples: n_samples is no hyperparameter of it
            params.pop("n_samples", None)
        if deep:
            options = {**self.backbone_defaults(), **(self.backbone_options or {})}
            params.update({f"backbone__{k}": v for k, v in options.items()})
        return params

    def set_params(self, **params) -> TorchUQMethod:
        """Set hyperparameters; ``backbone__<option>`` merges into ``backbone_options``
        (after ``backbone`` and ``backbone_options`` in the same call), the other options
        kept."""
        nested = {k[len("backbone__"):]: params.pop(k) for k in list(params)
                  if k.startswith("backbone__")}
        super().set_params(**params)
        if nested:
            known = self.backbone_defaults()
            unknown = sorted(set(nested) - set(known))
            if unknown:
                raise ValueError(f"backbone {self.backbone!r} has no option(s) "
                                 f"{', '.join(map(repr, unknown))}; it takes "
                                 f"{', '.join(known)}")
            self.backbone_options = {**(self.backbone_options or {}), **nested}
        return self

    # -- shared machinery -----------------------------------------------------------------
    def new_adapter(self) -> BackboneAdapter:
        """A fresh adapter for the current ``backbone`` and ``backbone_options``: every fit
        makes its own, so hyperparameters set after one fit take effect in the next."""
        return make_adapter(self.backbone, self.backbone_settings())

    @property
    def adapter(self) -> BackboneAdapter:
        """The fitted adapter (``adapter_``); before a fit, a fresh one."""
        return self.__dict__.get("adapter_") or self.new_adapter()

    def check_structures(self, structures: list[Atoms]) -> None:
        """One line (`UQBenchError`) where ``structures`` cannot go through this method's
        backbone (the adapter's `check_structures`): checked before any training."""
        adapter = self.new_adapter()
        adapter.resolve(structures)
        adapter.check_structures(structures)

    def check_prerequisites(self) -> None:
        """The backbone's package is importable (a fresh adapter: nothing is cached)."""
        try:
            adapter = make_adapter(self.backbone, self.backbone_settings())
        except ValueError as exc:
            raise UQBenchError(str(exc)) from None
        unknown = sorted(set(self.backbone_settings()) - set(type(adapter).defaults()))
        if unknown:
            raise UQBenchError(f"backbone {self.backbone!r} has no option(s) "
                               f"{', '.join(map(repr, unknown))}; it takes "
                               f"{', '.join(type(adapter).defaults())}")
        adapter.check_available()

    @property
    def torch_dtype(self) -> torch.dtype:
        try:
            return {"float32": torch.float32, "float64": torch.float64}[self.dtype]
        except KeyError:
            raise UQBenchError(f"dtype must be float32 or float64; got {self.dtype!r}") from None

    def loss(self, model: nn.Module, batch) -> torch.Tensor:
        return mse_loss(model, batch, self.force_weight, self.stress_weight)

    def fit(self, train_set: list[Atoms], val: list[Atoms] | None = None,
            calibration: list[Atoms] | None = None) -> TorchUQMethod:
        """Fit every model (`fit_member`) on ``train_set``, keeping the best weights on
        ``val``. ``calibration``: a split of its own for post-hoc fits (LLPR's constants),
        disjoint from ``val``; kept as graph items in ``calibration_items_`` (None
        without one, when such fits fall back to ``val``). With `stack_members`, the
        models train as one stacked computation where they can (`fit_many`)."""
        train_items, val_items = self._begin_fit(train_set, val, calibration)
        start = time.perf_counter()
        if self.stack_members and self.n_models() > 1 and _fit_stacked(
                [self], [train_items], [val_items]):
            return self
        for member in range(self.n_models()):
            torch.manual_seed(self.seed * 1000 + member)
            model, history = self.fit_member(member, train_items, val_items)
            model.eval()
            self.models_.append(model)
            self.history_.append(history)
        self.fit_seconds_ = time.perf_counter() - start
        self.budget_ = self._budget_summary()
        return self

    @staticmethod
    def fit_many(methods: list[TorchUQMethod], train_sets: list[list[Atoms]],
                 val_sets: list[list[Atoms] | None],
                 calibration_sets: list[list[Atoms] | None]) -> bool:
        """Fit ``methods`` (e.g. the seeds of one configuration, each with its own data)
        with all their models trained as one stacked computation
        (`uqbench.training.train_stacked`): each model initialised, ordered and selected
        as in its own `fit`, each method fitted as by `fit` (``fit_seconds_`` its share
        of the wall time, ``budget_["stacked"]`` the number of models trained together).
        False, with a log line saying why and nothing fitted, where they cannot stack:
        methods without `stack_members`, unequal budgets or settings, a backbone other
        than uqbench's EGNN, ``patience`` set, stress labels in the loss."""
        if not all(isinstance(m, TorchUQMethod) and m.stack_members for m in methods):
            note("the methods train one by one (not every one stacks its models)")
            return False
        items = [m._begin_fit(t, v, c) for m, t, v, c in
                 zip(methods, train_sets, val_sets, calibration_sets, strict=True)]
        return _fit_stacked(methods, [t for t, _ in items], [v for _, v in items])

    def _begin_fit(self, train_set: list[Atoms], val: list[Atoms] | None,
                   calibration: list[Atoms] | None) -> tuple[list[dict], list[dict] | None]:
        """What every fit does before training: checks, device, adapter, graphs, budget;
        returns the train and val graph items."""
        for name in ("force_weight", "stress_weight"):
            weight = getattr(self, name)
            if isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
                raise UQBenchError(f"{name} must be a number >= 0; got {weight!r}")
        train_set = _labelled(train_set, "train")
        if val:
            val = _labelled(val, "val")
        self.device_ = resolve_device(self.device)
        self.adapter_ = self.new_adapter()
        self.adapter.check_dtype(self.torch_dtype)
        self.backbone_options_ = self.adapter.resolve(train_set)
        train_items = self.adapter.graph_items(train_set)
        self.total_steps_ = self.budget_steps(len(train_items))
        val_items = self.adapter.graph_items(val) if val else None
        self.calibration_items_ = (self.adapter.graph_items(_labelled(calibration,
                                                                       "calibration"))
                                   if calibration else None)
        self.models_: list[nn.Module] = []
        self.history_: list[dict] = []
        return train_items, val_items

    def _budget_summary(self) -> dict:
        """Optimiser steps per model and stage as spent, against the budget."""
        per_model = []
        for history in self.history_:
            stages = history.get("stages") or {"train": history}
            per_model.append({name: h.get("steps", 0) for name, h in stages.items()})
        return {"max_steps": self.max_steps, "max_epochs": self.max_epochs,
                "budget_steps": self.total_steps_,
                "stacked": max(h.get("stacked", 1) for h in self.history_),
                "steps_per_model": [sum(m.values()) for m in per_model],
                "steps_by_stage": per_model}

    def budget_steps(self, n_train: int) -> int:
        """The optimiser steps one model may spend over all its stages: ``max_steps``, or
        ``max_epochs`` passes over ``n_train`` structures where that is set and fewer."""
        steps = math.inf if self.max_steps is None else self.max_steps
        if self.max_epochs is not None:
            steps = min(steps, self.max_epochs * math.ceil(n_train / self.batch_size))
        if steps == math.inf:
            raise UQBenchError("set a budget: max_steps (optimiser steps per model) or "
                               "max_epochs")
        return int(steps)

    @staticmethod
    def staged_history(stages: dict[str, dict], last: str) -> dict:
        """One history for a fit of several stages: each stage's own, the epochs and
        optimiser steps summed over all, and the last stage's losses at the top."""
        return {"stages": stages,
                "epochs": sum(h["epochs"] for h in stages.values()),
                "steps": sum(h["steps"] for h in stages.values()),
                "train_loss": stages[last]["train_loss"],
                "val_loss": stages[last]["val_loss"]}

    def split_budget(self, fraction: float) -> tuple[int, int]:
        """Optimiser steps of a first stage given ``fraction`` of the fit's budget and of
        a second stage given the rest (they add up to `budget_steps`)."""
        first = self.stage_steps(fraction)
        return first, self.total_steps_ - first

    def stage_steps(self, fraction: float) -> int:
        """A stage's share of the fit's budget (`budget_steps`), in optimiser steps: at
        least one for a positive fraction of a budget of at least one step."""
        steps = int(round(fraction * self.total_steps_))
        if fraction > 0 and self.total_steps_ > 0:
            steps = min(max(steps, 1), self.total_steps_)
        return steps

    def new_backbone(self, train_items: list[dict], member: int = 0) -> nn.Module:
        model = self.adapter.build().to(self.device_, self.torch_dtype)
        self.adapter.prepare_member(model, member)
        self.adapter.fit_normalisation(model, train_items)
        return model

    def fit_member(self, member: int, train_items: list[dict],
                    val_items: list[dict] | None) -> tuple[nn.Module, dict]:
        """Default: one backbone trained with the MSE loss."""
        model = self.new_backbone(train_items, member)
        history = self.train_stage(model, train_items, val_items, self.loss, None, self.lr,
                                   member, f"member {member + 1}/{self.n_models()}")
        return model, history

    def train_stage(self, model, train_items, val_items, loss_fn, max_epochs, lr, member, what,
                    max_steps: int | None = None, param_groups: list[dict] | None = None,
                    warmup_steps: int = 0, schedule_offset: int = 0):
        """One training stage of ``max_steps`` optimiser steps (None: the whole budget,
        `budget_steps`, for a single-stage method; multi-stage methods pass each stage's
        share, `split_budget` / `stage_steps`). ``max_epochs`` is kept for plugins that
        pass it and ignored: the budget is in steps. ``warmup_steps``: a linear
        learning-rate warm-up (for a stage that starts from trained weights; see
        `uqbench.training.train`). ``schedule_offset``: the optimiser steps the fit's
        earlier stages took: the learning-rate schedule runs over the whole fit's budget,
        so a later stage continues its decay (a short budget's first stage is not annealed
        to nothing before the second starts)."""
        if max_steps is None:
            max_steps = self.total_steps_
        max_epochs = max_steps  # an epoch holds at least one step: the steps decide
        return train(
            model, train_items, val_items, loss_fn,
            max_epochs=max_epochs, lr=lr, batch_size=self.batch_size, patience=self.patience,
            device=self.device_, dtype=self.torch_dtype, seed=self.seed * 1000 + member,
            max_steps=max_steps, param_groups=param_groups,
            desc=f"{self.key or type(self).__name__} {what}", warmup_steps=warmup_steps,
            schedule=self.lr_schedule, schedule_span=(schedule_offset, self.total_steps_),
        )

    @property
    def n_parameters(self) -> int | None:
        if not hasattr(self, "models_"):
            return None
        return sum(p.numel() for m in self.models_ for p in m.parameters())

    def predict_distribution(
        self, structures: list[Atoms], n_samples: int | None = None
    ) -> Prediction:
        if not hasattr(self, "models_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit() first")
        items = self.adapter.graph_items(structures)
        if self.parametric:
            return self._predict_parametric(structures, items)
        n_samples = n_samples or self.n_samples
        copies = self.copies_per_pass(n_samples)
        energies, forces = [], []
        # Progress only for a data split: a calculator predicting one structure per MD
        # step must not log two lines per step.
        progress = (Progress(len(items), "predicting", unit="structure")
                    if len(items) >= PROGRESS_MIN_STRUCTURES else None)
        for chunk in _chunks(items, MAX_EDGES_PER_PASS // max(copies, 1)):
            batch = collate(chunk, self.torch_dtype).to(self.device_)
            e, f = self.sample(batch, n_samples)
            energies.append(e.detach().cpu().double().numpy())
            forces.append(f.detach().cpu().double().numpy())
            if progress is not None:
                progress.update(len(chunk))
        if progress is not None:
            progress.close()
        n_atoms = np.array([len(a) for a in structures])
        return Prediction.from_samples(
            np.concatenate(energies, axis=1), np.concatenate(forces, axis=1), n_atoms
        )

    def batches(self, structures: list[Atoms]):
        """``structures`` as `GraphBatch` es on the fitted method's device and dtype, under
        the edge budget of a forward pass (labels included where present)."""
        for chunk in _chunks(self.adapter.graph_items(structures), MAX_EDGES_PER_PASS):
            yield collate(chunk, self.torch_dtype).to(self.device_)

    def _predict_parametric(self, structures: list[Atoms], items: list[dict]) -> Prediction:
        parts: dict[str, list[np.ndarray]] = {}
        for chunk in _chunks(items, MAX_EDGES_PER_PASS):
            batch = collate(chunk, self.torch_dtype).to(self.device_)
            for key, value in self.predict_parametric(batch).items():
                parts.setdefault(key, []).append(value.detach().cpu().double().numpy())
        return Prediction(n_atoms=np.array([len(a) for a in structures]),
                          **{key: np.concatenate(p) for key, p in parts.items()})

    def member_passes(self, model: nn.Module, batch, copies: int, **model_kwargs):
        """``copies`` passes of one model as one replicated batch (``model_kwargs`` go to
        the model's forward, e.g. per-replica noise)."""
        e, f = energy_and_forces(model, batch.repeat(copies), **model_kwargs)
        return (e.reshape(copies, batch.n_structures),
                f.reshape(copies, batch.positions.shape[0], 3))

    # -- persistence ----------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """A directory with ``config.json`` and ``weights.pt`` (plain state dicts)."""
        if not hasattr(self, "models_"):
            raise RuntimeError("fit() before save()")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        # Fitted values that are plain data (a plugin's std, a budget, a history) travel
        # in config.json, so a method needs no save/load of its own for them.
        fitted = {}
        for name, value in vars(self).items():
            if (name.endswith("_") and not name.startswith("_")
                    and name not in ("models_", "backbone_options_", "device_")):
                try:
                    fitted[name] = json.loads(json.dumps(value))
                except (TypeError, ValueError):
                    continue
        config = {"class": f"{type(self).__module__}:{type(self).__qualname__}",
                  "key": self.key, "params": self.get_params(),
                  "backbone_options_": self.backbone_options_, "fitted": fitted}
        (path / "config.json").write_text(json.dumps(config, indent=2))
        torch.save([m.state_dict() for m in self.models_], path / "weights.pt")

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> TorchUQMethod:
        path = Path(path)
        config = json.loads((path / "config.json").read_text())
        params = dict(config["params"])
        if device is not None:
            params["device"] = device
        method = cls(**params)
        method.key = config.get("key", "")
        method.device_ = resolve_device(method.device)
        for name, value in (config.get("fitted") or {}).items():
            if name.endswith("_") and not name.startswith("_") and name != "models_":
                setattr(method, name, value)
        method.backbone_options_ = config.get("backbone_options_", method.backbone_settings())
        method.adapter_ = make_adapter(method.backbone, dict(method.backbone_options_))
        states = torch.load(path / "weights.pt", map_location=method.device_, weights_only=True)
        method.models_ = []
        for state in states:
            model = method.wrap(method.adapter.build()).to(method.device_, method.torch_dtype)
            model.load_state_dict(state)
            model.eval()
            method.models_.append(model)
        return method

    def wrap(self, backbone: nn.Module) -> nn.Module:
        """The fitted module around a backbone (identity here; strategies add their layers)."""
        return backbone


#: Predictions over at least this many structures report progress.
PROGRESS_MIN_STRUCTURES = 50


def _chunks(items: list[dict], max_edges: int):
    chunk, edges = [], 0
    for it in items:
        n = max(len(it["src"]), 1)
        if chunk and edges + n > max_edges:
            yield chunk
            chunk, edges = [], 0
        chunk.append(it)
        edges += n
    if chunk:
        yield chunk


def _labelled(structures: list[Atoms], split: str) -> list[Atoms]:
    """The structures with their labels where uqbench reads them (copies: a calculator's
    results, as ``ase.io.read`` gives them, move to ``info``/``arrays``), checked before
    any training: an energy, forces or both, finite."""
    from uqbench.dataset import normalise_labels

    if not structures:
        raise UQBenchError(f"the {split} split is empty")
    out = []
    for i, a in enumerate(structures):
        if a.calc is not None:
            calc = a.calc
            a = a.copy()
            a.calc = calc
            a = normalise_labels(a)
        if "energy" not in a.info and "forces" not in a.arrays:
            raise UQBenchError(f"{split} structure {i} has neither an energy nor a forces "
                               "label")
        if ("energy" in a.info and not np.isfinite(a.info["energy"])) or (
                "forces" in a.arrays and not np.isfinite(a.arrays["forces"]).all()):
            raise UQBenchError(f"{split} structure {i} has a non-finite energy or force label")
        out.append(a)
    return out


#: Edges in one stacked training batch (all models' batches joined) beyond which the models
#: are trained in several stacks: past about this size a step is bound by memory traffic,
#: not by per-operation overhead, and stacking stops paying (study EGNN on nbody, one
#: thread, 640 edges a batch: 9.3 ms per model-step at 5 stacked, 8.2 at 12, against about
#: 10 alone; in the nbody-v2 study 12 stacked with per-seed validation sets ran slower
#: than the loop, so 5).
STACK_EDGES = 3200

#: Settings that stacked models must share (they train under one loop and optimiser).
STACK_SHARED = ("lr", "batch_size", "force_weight", "total_steps_", "device_", "dtype",
                "lr_schedule")


def _fit_stacked(methods: list[TorchUQMethod], train_items: list[list[dict]],
                 val_items: list[list[dict] | None]) -> bool:
    """Train every model of ``methods`` (after `TorchUQMethod._begin_fit`) as one stacked
    computation and finish each method's fit; False, with a log line saying why and
    nothing trained, where they cannot stack."""
    from uqbench.backbones.stacked import StackedEGNN, can_stack
    from uqbench.training import train_stacked

    what = methods[0].key or type(methods[0]).__name__
    counts = [m.n_models() for m in methods]
    reason = None
    if any(m.patience is not None for m in methods):
        reason = "patience is set; stacked training has no early stopping"
    elif any(m.stress_weight and any("stress" in it for it in items)
             for m, items in zip(methods, train_items, strict=True)):
        reason = "the loss has a stress term"
    elif any(getattr(m, key) != getattr(methods[0], key) for m in methods
             for key in STACK_SHARED):
        reason = "their budgets or training settings differ"
    elif len({len(items) for items in train_items}) > 1:
        reason = "their training sets differ in size"
    elif any(bool(v) != bool(val_items[0]) for v in val_items):
        reason = "some have a val split and some not"
    models, seeds = [], []
    if reason is None:
        for method, items, n in zip(methods, train_items, counts, strict=True):
            for member in range(n):
                torch.manual_seed(method.seed * 1000 + member)
                models.append(method.new_backbone(items, member))
                seeds.append(method.seed * 1000 + member)
        reason = can_stack(models)
    if reason is not None:
        note("%s: %d models train one by one (%s)", what, sum(counts), reason)
        return False
    head = methods[0]
    edges = np.mean([len(it["src"]) for it in train_items[0]]) * head.batch_size
    per_stack = max(1, int(STACK_EDGES // max(edges, 1)))
    if per_stack < 2:
        note("%s: %d models train one by one (a batch of about %d edges is large enough "
             "alone)", what, sum(counts), edges)
        return False
    note("%s: %d models train stacked, %d at a time", what, len(models),
         min(per_stack, len(models)))
    trains = [items for items, n in zip(train_items, counts, strict=True) for _ in range(n)]
    vals = [v for v, n in zip(val_items, counts, strict=True) for _ in range(n)]
    start = time.perf_counter()
    histories, states = [], []
    for at in range(0, len(models), per_stack):
        part = slice(at, at + per_stack)
        h, s = train_stacked(
            StackedEGNN.from_models(models[part]), trains[part],
            vals[part] if val_items[0] else None,
            force_weight=head.force_weight, lr=head.lr, batch_size=head.batch_size,
            device=head.device_, dtype=head.torch_dtype, seeds=seeds[part],
            max_steps=head.total_steps_,
            desc=f"{what} {len(models[part])} models stacked", schedule=head.lr_schedule)
        histories += h
        states += s
    wall = time.perf_counter() - start
    for model, state in zip(models, states, strict=True):
        model.load_state_dict(state)
        model.eval()
    at = 0
    for method, n in zip(methods, counts, strict=True):
        method.models_ = models[at:at + n]
        method.history_ = histories[at:at + n]
        at += n
        method.fit_seconds_ = wall * n / len(models)
        method.budget_ = method._budget_summary()
        method.budget_["stacked_wall_s"] = wall
    return True


class WarmStarted(TorchUQMethod):
    """A method whose backbone first trains with the MSE loss for ``warm_start_fraction``
    of the budget, after which a second stage starts from those weights with a fresh
    optimiser, its learning rate warming up over ``lr_warmup`` of the stage (BLIP, MVE,
    evidential regression, shallow ensembles; a plugin's method of this shape too)."""

    parameter_constraints = {
        "warm_start_fraction": Interval(float, 0, 1, closed="left"),
        "lr_warmup": Interval(float, 0, 1),
    }

    def __init__(self, warm_start_fraction: float = 0.5, lr_warmup: float = LR_WARMUP,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.warm_start_fraction = warm_start_fraction
        self.lr_warmup = lr_warmup

    def fit_warm_then(self, member: int, train_items: list[dict],
                      val_items: list[dict] | None, stage: str, loss_fn, what: str,
                      prepare=None) -> tuple[nn.Module, dict]:
        """The two-stage fit of a method built on a warm-started backbone: the backbone
        trains with the MSE loss for ``warm_start_fraction`` of the budget (none at 0),
        `wrap` builds the model around it, ``prepare(model, steps)`` readies it
        for the second stage (optional; the stage's share of the budget), and ``loss_fn``
        trains the whole model for the rest, its learning rate warming up over
        ``lr_warmup`` of it. The history's stages are ``warm_start`` and ``stage``."""
        backbone = self.new_backbone(train_items, member)
        stages = {}
        warm_steps, steps = self.split_budget(self.warm_start_fraction)
        if self.warm_start_fraction > 0:
            stages["warm_start"] = self.train_stage(
                backbone, train_items, val_items, self.loss, None, self.lr, member,
                "warm start", max_steps=warm_steps)
        model = self.wrap(backbone).to(self.device_, self.torch_dtype)
        if prepare is not None:
            prepare(model, steps)
        stages[stage] = self.train_stage(
            model, train_items, val_items, loss_fn, None, self.lr, member, what,
            max_steps=steps, warmup_steps=self.stage_warmup(steps),
            schedule_offset=warm_steps if self.warm_start_fraction > 0 else 0)
        return model, self.staged_history(stages, stage)

    def stage_warmup(self, stage_steps: int) -> int:
        """Warm-up steps of a stage that starts from trained weights: ``lr_warmup`` (a
        fraction) of the stage's steps, at least 1 where the fraction is positive."""
        if self.lr_warmup <= 0:
            return 0
        return max(1, int(round(self.lr_warmup * stage_steps)))
