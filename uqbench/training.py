"""The shared training loop: Adam(W), minibatches, a step or epoch budget, early stopping on
val, progress (a bar on a terminal, log lines with ETA everywhere)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from uqbench.backbones.adapter import energy_and_forces
from uqbench.backbones.graph import (
    GraphBatch,
    at_energy_labels,
    at_force_labels,
    collate,
    mean_or_zero,
)
from uqbench.dataset import VOIGT
from uqbench.errors import UQBenchError
from uqbench.progress import Progress


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without it is a user error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UQBenchError("--device cuda was requested but CUDA is not available here")
    if device != "cpu" and not device.startswith("cuda"):
        raise UQBenchError(f"unknown device {device!r}; use auto, cpu or cuda")
    return torch.device(device)


def mse_loss(model: nn.Module, batch: GraphBatch, force_weight: float,
             stress_weight: float = 0.0) -> torch.Tensor:
    """Per-atom energy MSE + force_weight x force-component MSE (+ stress_weight x MSE of
    the stress components where the batch has stress labels), in the model's scale units;
    each mean runs over the labels present."""
    stress = uses_stress(batch, stress_weight)
    out = energy_and_forces(model, batch, create_graph=model.training, with_stress=stress)
    energy, forces = out[0], out[1]
    scale = model.energy_scale
    (e_err,) = at_energy_labels(batch, (energy - batch.energy) / batch.n_atoms / scale)
    (f_err,) = at_force_labels(batch, (forces - batch.forces) / scale)
    loss = mean_or_zero(e_err**2) + force_weight * mean_or_zero(f_err**2)
    if stress:
        pred, true = stress_components(out[2], batch, scale)
        loss = loss + stress_weight * ((pred - true) ** 2).mean()
    return loss


def uses_stress(batch: GraphBatch, stress_weight: float) -> bool:
    """Whether a loss on ``batch`` has a stress term: a weight, and labels (`collate` sets
    ``stress`` only when some structure has one, so no device sync is needed here)."""
    return bool(stress_weight) and batch.stress is not None


def stress_components(stress: torch.Tensor, batch: GraphBatch, scale: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted [..., m, 6] and labelled [m, 6] stress of the m structures with a label, in
    Voigt order and in the loss unit of energies: stress x volume per atom / scale (eV/atom
    over the force RMS, like the energy term). ``stress`` is [..., n_structures, 3, 3]."""
    labelled = torch.isfinite(batch.stress).all(-1).all(-1)
    per_atom = torch.linalg.det(batch.cell).abs() / batch.n_atoms / scale
    factor = per_atom[labelled][:, None]
    pred = stress[..., labelled, :, :][..., VOIGT[0], VOIGT[1]] * factor
    true = batch.stress[labelled][:, VOIGT[0], VOIGT[1]] * factor
    return pred, true


def batches(items: list[dict], batch_size: int, device: torch.device, dtype: torch.dtype,
            rng: np.random.Generator | None = None):
    order = rng.permutation(len(items)) if rng is not None else np.arange(len(items))
    for start in range(0, len(items), batch_size):
        yield collate([items[i] for i in order[start : start + batch_size]], dtype).to(device)


def train(
    model: nn.Module,
    train_items: list[dict],
    val_items: list[dict] | None,
    loss_fn: Callable[[nn.Module, GraphBatch], torch.Tensor],
    *,
    max_epochs: int,
    lr: float,
    batch_size: int,
    patience: int | None,
    device: torch.device,
    dtype: torch.dtype,
    seed: int,
    max_steps: int | None = None,
    param_groups: list[dict] | None = None,
    desc: str = "training",
    warmup_steps: int = 0,
    schedule: str = "constant",
    schedule_span: tuple[int, int] | None = None,
) -> dict:
    """Train in place; restore the weights with the best validation loss. Returns a history.
    ``patience`` None: no early stopping and no learning-rate reduction on a plateau.

    The budget is ``max_epochs`` passes over the data or, when given, ``max_steps``
    optimiser steps, whichever ends first (a last partial epoch is validated like a whole
    one). ``param_groups`` (AdamW groups with their own ``lr``/``weight_decay``) replace the
    default single group of all parameters at ``lr`` without weight decay (AdamW without
    weight decay is Adam). The history counts the optimiser steps taken (``steps``).

    ``warmup_steps`` > 0 ramps every group's learning rate linearly from 1/warmup_steps of
    its value to its value over the first steps. A stage that starts from trained weights
    needs it: a fresh Adam's first steps move every parameter by about the learning rate,
    whatever its gradient (m / sqrt(v) = sign(g) at step 1), which can throw a trained
    network far from where it was (BLIP's variational stage on silica-bks lost its warm
    start in one step: force RMSE 0.33 -> 1.6 eV/Å).

    ``schedule`` (with ``patience`` None): ``cosine`` decays every group's learning rate
    as (1 + cos(pi t / T)) / 2 over the T planned steps, ``constant`` keeps it (see
    `lr_factor`); ``schedule_span`` (offset, total) places this stage's steps inside a
    longer schedule (a later stage of a fit continues the decay the earlier ones began).
    With ``patience``, the plateau rule sets it instead.
    """
    rng = np.random.default_rng(seed)
    groups = param_groups if param_groups is not None else [{"params": model.parameters()}]
    # foreach: one multi-tensor update instead of one per parameter (about 8 % of a study
    # EGNN step on one CPU thread; benchmarks/stacked_steps.py)
    optimiser = torch.optim.AdamW(groups, lr=lr, weight_decay=0.0, foreach=True)
    # patience None: every step is spent and the learning rate follows only the warm-up
    # (the protocol's rule); else a plateau of patience // 2 epochs halves it.
    scheduler = (None if patience is None else torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimiser, factor=0.5, patience=max(1, patience // 2)))
    val_batches = list(batches(val_items, 4 * batch_size, device, dtype)) if val_items else None
    best, best_state, since_best, steps = math.inf, None, 0, 0
    history: dict = {"train_loss": [], "val_loss": []}
    if max_steps is not None and max_steps <= 0:
        max_epochs = 0
    n_batches = math.ceil(len(train_items) / batch_size)
    planned = max_epochs * n_batches
    if max_steps is not None:
        planned = min(planned, max(max_steps, 0))
    progress = Progress(planned, desc, unit="step")
    base_lrs = [group["lr"] for group in optimiser.param_groups]
    for epoch in range(max_epochs):
        model.train()
        total, n = 0.0, 0
        for batch in batches(train_items, batch_size, device, dtype, rng):
            if scheduler is None or steps < warmup_steps:
                span_offset, span_total = schedule_span or (0, planned)
                factor = lr_factor(steps, planned, warmup_steps, "constant") * (
                    lr_factor(span_offset + steps, span_total, 0, schedule)
                    if scheduler is None else 1.0)
                for group, base in zip(optimiser.param_groups, base_lrs, strict=True):
                    group["lr"] = base * factor
            optimiser.zero_grad(set_to_none=True)
            loss = loss_fn(model, batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{desc}: the training loss became {loss.item()}")
            loss.backward()
            optimiser.step()
            steps += 1
            progress.update(1)
            total += loss.item() * batch.n_structures
            n += batch.n_structures
            if max_steps is not None and steps >= max_steps:
                break
        history["train_loss"].append(total / n)
        out_of_steps = max_steps is not None and steps >= max_steps
        if val_batches is None:
            if out_of_steps:
                break
            continue
        model.eval()
        val = sum(loss_fn(model, b).item() * b.n_structures for b in val_batches)
        val /= sum(b.n_structures for b in val_batches)
        history["val_loss"].append(val)
        if scheduler is not None:
            scheduler.step(val)
        progress.update(0, epoch=epoch + 1, train=total / n, val=val)
        if val < best:
            best, best_state, since_best = val, copy.deepcopy(model.state_dict()), 0
            history["best_step"] = steps
        else:
            since_best += 1
            if patience is not None and since_best >= patience:
                break
        if out_of_steps:
            break
    progress.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    history["epochs"] = len(history["train_loss"])
    history["steps"] = steps
    return history


#: Learning-rate schedules over a stage's steps (`lr_factor`).
SCHEDULES = ("cosine", "constant")


def lr_factor(step: int, total: int, warmup_steps: int = 0,
              schedule: str = "cosine") -> float:
    """The learning rate of step ``step`` (0-based, of ``total``) over its base value: a
    linear warm-up over the first ``warmup_steps`` times the schedule, ``cosine``
    (1 + cos(pi step / total)) / 2 or ``constant`` 1. A stage-long cosine decay lets a
    short budget converge: the study EGNN on nbody at 200 structures and 280 steps reached
    a test force RMSE of 0.75 of the constant predictor's at a constant rate."""
    factor = (step + 1) / warmup_steps if step < warmup_steps else 1.0
    if schedule == "cosine" and total > 0:
        factor *= 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
    return factor


def fair_crps(samples: torch.Tensor, y: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """Almost-fair CRPS per target, differentiable; ``samples`` [S, *y.shape], S >= 2.

    ``alpha`` x fair + (1 - alpha) x standard estimator (AIFS-CRPS, Lang et al. 2024);
    ``alpha = 1`` is the fair CRPS (Ferro 2008), which gives no gradient at all to a sample
    beyond the observation and every other sample, so rare far tails cost almost nothing;
    any ``alpha < 1`` keeps a pull on them. Uses sorted samples (sum_ij |x_i - x_j| =
    2 sum_k (2k - S - 1) x_(k)), like `uqbench.metrics.crps_ensemble`, so memory stays O(S)
    per target.
    """
    s = samples.shape[0]
    if s < 2:
        raise ValueError("the fair CRPS needs at least 2 samples")
    abs_err = (samples - y.unsqueeze(0)).abs().mean(0)
    ranks = torch.arange(1, s + 1, device=samples.device, dtype=samples.dtype)
    weights = (2 * ranks - s - 1).view(-1, *([1] * y.dim()))
    half_pairwise = (torch.sort(samples, dim=0).values * weights).sum(0)  # sum_ij |xi-xj| / 2
    return abs_err - half_pairwise * (alpha / (s * (s - 1)) + (1.0 - alpha) / (s * s))


class fixed_noise:  # noqa: N801 (used as a context manager, like torch.no_grad)
    """Run a block with the global torch RNG seeded, then restore it: validation losses of
    stochastic models then use the same noise every epoch."""

    def __init__(self, seed: int, device: torch.device) -> None:
        self.seed, self.device = seed, device
        self._fork = None

    def __enter__(self) -> None:
        devices = [self.device] if self.device.type == "cuda" else []
        self._fork = torch.random.fork_rng(devices=devices)
        self._fork.__enter__()
        torch.manual_seed(self.seed)

    def __exit__(self, *exc) -> None:
        self._fork.__exit__(*exc)


def stacked_mse_losses(stack, batch: GraphBatch, structure_model: torch.Tensor,
                       force_weight: float) -> torch.Tensor:
    """`mse_loss` of each model of a `uqbench.backbones.stacked.StackedEGNN` on its own
    part of a joined batch: a vector [K] (the sum's gradient with respect to model k's
    weights is the gradient of model k's loss alone)."""
    k = stack.k
    energy, forces = energy_and_forces(stack, batch, create_graph=stack.training,
                                       structure_model=structure_model)
    atom_model = structure_model[batch.structure]
    e_err = (energy - batch.energy) / batch.n_atoms / stack.energy_scale[structure_model]
    f_err = (forces - batch.forces) / stack.energy_scale[atom_model][:, None]
    e_model, f_model = structure_model, atom_model
    if batch.energy_labelled is not None:  # select before squaring: NaN labels stay out
        e_err, e_model = e_err[batch.energy_labelled], e_model[batch.energy_labelled]
        f_err, f_model = f_err[batch.forces_labelled], f_model[batch.forces_labelled]
    zeros = energy.new_zeros(k)
    e_sum = zeros.index_add(0, e_model, e_err**2)
    f_sum = zeros.index_add(0, f_model, (f_err**2).sum(-1))
    e_n = torch.bincount(e_model, minlength=k).clamp(min=1)
    f_n = 3 * torch.bincount(f_model, minlength=k).clamp(min=1)
    return e_sum / e_n + force_weight * f_sum / f_n


def train_stacked(
    stack,
    train_items: list[list[dict]],
    val_items: list[list[dict]] | None,
    *,
    force_weight: float,
    lr: float,
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype,
    seeds: list[int],
    max_steps: int,
    desc: str = "training",
    warmup_steps: int = 0,
    schedule: str = "constant",
) -> tuple[list[dict], list[dict]]:
    """`train` for the K models of ``stack`` at once: model k sees ``train_items[k]`` in the
    order ``seeds[k]`` gives (as `train` with that seed), every model takes ``max_steps``
    Adam(W) steps, and each keeps its own best-validation weights (on ``val_items[k]``).
    The training sets must be equally long (equal steps per epoch). No early stopping or
    plateau schedule (the protocol's rule; `train` with ``patience`` None). Returns each
    model's history and best state dict (an `EGNN` state dict). ``schedule``: as `train`'s.
    """
    from uqbench.backbones.stacked import join

    k = stack.k
    n_train = len(train_items[0])
    if any(len(items) != n_train for items in train_items):
        raise ValueError("stacked training needs training sets of one size")
    rngs = [np.random.default_rng(seed) for seed in seeds]
    optimiser = torch.optim.AdamW(stack.parameters(), lr=lr, weight_decay=0.0, foreach=True)
    base_lr = lr
    val_batches = None
    if val_items:
        size = 4 * batch_size
        longest = max(len(v) for v in val_items)
        val_batches = [join([v[s:s + size] for v in val_items], dtype, device)
                       for s in range(0, longest, size)]
        val_counts = torch.tensor([len(v) for v in val_items], dtype=torch.float64)
    best = [math.inf] * k
    best_states: list[dict | None] = [None] * k
    histories: list[dict] = [{"train_loss": [], "val_loss": []} for _ in range(k)]
    steps = 0
    progress = Progress(max(max_steps, 0), desc, unit="step")
    epoch = 0
    while steps < max_steps:
        stack.train()
        orders = [rng.permutation(n_train) for rng in rngs]
        totals, seen = torch.zeros(k, dtype=torch.float64), 0
        for start in range(0, n_train, batch_size):
            for group in optimiser.param_groups:
                group["lr"] = base_lr * lr_factor(steps, max_steps, warmup_steps, schedule)
            chunk = [[items[i] for i in order[start:start + batch_size]]
                     for items, order in zip(train_items, orders, strict=True)]
            batch, model = join(chunk, dtype, device)
            optimiser.zero_grad(set_to_none=True)
            losses = stacked_mse_losses(stack, batch, model, force_weight)
            if not torch.isfinite(losses).all():
                raise FloatingPointError(f"{desc}: a training loss became "
                                         f"{losses.detach().tolist()}")
            losses.sum().backward()
            optimiser.step()
            steps += 1
            progress.update(1)
            totals += losses.detach().double().cpu() * len(chunk[0])
            seen += len(chunk[0])
            if steps >= max_steps:
                break
        epoch += 1
        for i in range(k):
            histories[i]["train_loss"].append(float(totals[i]) / max(seen, 1))
        if val_batches is None:
            continue
        stack.eval()
        val = torch.zeros(k, dtype=torch.float64)
        for vbatch, vmodel in val_batches:
            per_model = torch.bincount(vmodel, minlength=k).double().cpu()
            val += (stacked_mse_losses(stack, vbatch, vmodel, force_weight).detach()
                    .double().cpu() * per_model)
        val /= val_counts.clamp(min=1)
        progress.update(0, epoch=epoch, val=float(val.mean()))
        for i in range(k):
            histories[i]["val_loss"].append(float(val[i]))
            if float(val[i]) < best[i]:
                best[i] = float(val[i])
                best_states[i] = stack.state_dict_of(i)
                histories[i]["best_step"] = steps
    progress.close()
    for i in range(k):
        if best_states[i] is None:
            best_states[i] = stack.state_dict_of(i)
        histories[i].update(epochs=len(histories[i]["train_loss"]), steps=steps, stacked=k)
    return histories, best_states
