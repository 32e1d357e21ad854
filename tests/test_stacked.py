"""Stacked training: K EGNNs as one computation agree with K separate fits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import uqbench
from uqbench.backbones.adapter import energy_and_forces, make_adapter
from uqbench.backbones.graph import collate
from uqbench.backbones.stacked import StackedEGNN, can_stack, join
from uqbench.training import mse_loss, stacked_mse_losses, train, train_stacked

OPTS = {"hidden": 8, "n_layers": 2}


def _models(items, k, options=OPTS, dtype=torch.float64):
    adapter = make_adapter("egnn", options)
    models = []
    for i in range(k):
        torch.manual_seed(100 + i)
        model = adapter.build().to(dtype)
        adapter.fit_normalisation(model, items)
        with torch.no_grad():  # distinct normalisations per model, as seeds' data give
            model.energy_shift += 0.1 * i
            model.energy_scale *= 1 + 0.2 * i
        models.append(model)
    return adapter, models


def test_stack_round_trips_and_matches_each_model(tiny_nbody):
    adapter, models = _models(adapter_items := make_adapter("egnn", OPTS).graph_items(
        tiny_nbody.splits["train"][:12]), 3)
    stack = StackedEGNN.from_models(models)
    # energies and forces of each model on its own (different) batch
    parts = [adapter_items[0:4], adapter_items[4:7], adapter_items[7:12]]  # unequal sizes
    batch, model = join(parts, torch.float64, torch.device("cpu"))
    e, f = energy_and_forces(stack, batch, structure_model=model)
    start_s, start_a = 0, 0
    for k, part in enumerate(parts):
        b = collate(part, torch.float64)
        e_k, f_k = energy_and_forces(models[k], b)
        n_atoms = int(b.n_atoms.sum())
        np.testing.assert_allclose(e[start_s:start_s + len(part)].detach(), e_k.detach(),
                                   rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(f[start_a:start_a + n_atoms].detach(), f_k.detach(),
                                   rtol=1e-10, atol=1e-12)
        start_s, start_a = start_s + len(part), start_a + n_atoms
    # out and back in: the same state dicts
    fresh = [adapter.build().double() for _ in range(3)]
    for orig, back in zip(models, stack.to_models(fresh), strict=True):
        for (name, a), (_, b) in zip(orig.state_dict().items(), back.state_dict().items(),
                                     strict=True):
            assert torch.equal(a, b), name


def test_stacked_losses_are_each_models_own(tiny_nbody):
    items = make_adapter("egnn", OPTS).graph_items(tiny_nbody.splits["train"][:16])
    _, models = _models(items, 2)
    stack = StackedEGNN.from_models(models).train()
    parts = [items[:8], items[8:]]
    batch, model = join(parts, torch.float64, torch.device("cpu"))
    losses = stacked_mse_losses(stack, batch, model, force_weight=0.7)
    for k, part in enumerate(parts):
        expected = mse_loss(models[k].train(), collate(part, torch.float64), 0.7)
        assert float(losses[k].detach()) == pytest.approx(float(expected.detach()), rel=1e-12)


@pytest.mark.parametrize("k", [1, 3])
def test_stacked_training_equals_separate_training(tiny_nbody, k):
    """Same initialisation, same batch orders (seeds), 9 Adam steps with warm-up: every
    model's weights, losses and best-validation choice agree to float64 tolerance."""
    adapter = make_adapter("egnn", OPTS)
    items = adapter.graph_items(tiny_nbody.splits["train"][:20])
    val = adapter.graph_items(tiny_nbody.splits["val"][:6])
    _, models = _models(items, k)
    stack = StackedEGNN.from_models(models)
    seeds = [7 + i for i in range(k)]
    histories, states = train_stacked(
        stack, [items] * k, [val] * k, force_weight=1.0, lr=3e-3, batch_size=8,
        device=torch.device("cpu"), dtype=torch.float64, seeds=seeds, max_steps=9,
        warmup_steps=2)
    for i in range(k):
        alone = models[i]
        h = train(alone, items, val, lambda m, b: mse_loss(m, b, 1.0), max_epochs=9,
                  lr=3e-3, batch_size=8, patience=None, device=torch.device("cpu"),
                  dtype=torch.float64, seed=seeds[i], max_steps=9, warmup_steps=2)
        assert histories[i]["steps"] == h["steps"] == 9
        np.testing.assert_allclose(histories[i]["train_loss"], h["train_loss"], rtol=1e-9)
        np.testing.assert_allclose(histories[i]["val_loss"], h["val_loss"], rtol=1e-9)
        assert histories[i]["best_step"] == h["best_step"]
        for name, value in alone.state_dict().items():
            np.testing.assert_allclose(states[i][name], value, rtol=1e-8, atol=1e-10,
                                       err_msg=name)


def test_an_ensemble_trains_stacked_and_says_so(tiny_nbody):
    kwargs = dict(n_members=3, max_steps=6, batch_size=8, device="cpu", dtype="float64",
                  backbone_options=OPTS)
    train_set, val = tiny_nbody.splits["train"][:16], tiny_nbody.splits["val"][:6]
    stacked = uqbench.create_method("ensemble-egnn", **kwargs).fit(train_set, val)
    assert stacked.budget_["stacked"] == 3 and stacked.budget_["steps_per_model"] == [6] * 3
    loop = uqbench.create_method("ensemble-egnn", **kwargs)
    loop.stack_members = False
    loop.fit(train_set, val)
    assert loop.budget_["stacked"] == 1
    test = tiny_nbody.splits["test"][:5]
    a, b = stacked.predict_distribution(test), loop.predict_distribution(test)
    np.testing.assert_allclose(a.energy_samples, b.energy_samples, rtol=1e-8)
    np.testing.assert_allclose(a.forces_samples, b.forces_samples, rtol=1e-7, atol=1e-10)


def test_what_cannot_stack_falls_back_with_a_reason(tiny_nbody, caplog):
    _, models = _models(make_adapter("egnn", OPTS).graph_items(
        tiny_nbody.splits["train"][:4]), 2)
    assert can_stack(models) is None
    _, other = _models(make_adapter("egnn", {"hidden": 4, "n_layers": 1}).graph_items(
        tiny_nbody.splits["train"][:4]), 1, {"hidden": 4, "n_layers": 1})
    assert "architecture" in can_stack([models[0], other[0]])
    assert can_stack(models[:1]) == "one model"
    method = uqbench.create_method("ensemble-egnn", n_members=2, max_steps=2, patience=5,
                                   batch_size=8, device="cpu", backbone_options=OPTS)
    method.fit(tiny_nbody.splits["train"][:8], tiny_nbody.splits["val"][:4])
    assert method.budget_["stacked"] == 1


SWEEP = """
methods: [egnn, mcdropout-egnn]
datasets: [nbody]
train_sizes: [16]
seeds: [0, 1, 2]
dataset_options: {nbody: {val_size: 8, test_size: 8, ood_size: 6}}
params:
  - set: {max_steps: 5, batch_size: 8, dtype: float64,
          backbone_options: {hidden: 8, n_layers: 1}}
"""


def test_a_sweep_stacks_the_seeds_of_a_cell_and_matches_separate_runs(tmp_path):
    import json

    from uqbench.runner import run
    from uqbench.sweep import expand, load_sweep, run_sweep, stack_groups

    spec_path = tmp_path / "s.yaml"
    spec_path.write_text(SWEEP)
    configs = expand(load_sweep(spec_path), tmp_path / "stacked")
    groups = stack_groups(configs)
    assert sorted(len(g) for g in groups) == [3, 3]  # egnn's seeds, MC dropout's seeds
    assert {c.seed for c in groups[0]} == {0, 1, 2}
    assert run_sweep(configs, progress=False) == {"done": 6, "skipped": 0, "failed": 0}
    records = {(r["method"]["key"], r["seed"]): r for r in (
        json.loads(p.read_text()) for p in (tmp_path / "stacked").rglob("*.json"))}
    assert len(records) == 6
    assert {r["budget"]["stacked"] for r in records.values()} == {3}
    assert len({r["dataset"]["options"]["seed"] for k, r in records.items()
                if k[0] == "egnn"}) == 3  # each seed its own data
    # the deterministic EGNN alone, seed by seed: the same numbers to float64 tolerance
    for cfg in configs:
        if cfg.method != "egnn":
            continue
        cfg.out = tmp_path / "alone"
        _, alone = run(cfg)
        stacked = records[("egnn", cfg.seed)]
        assert alone["run_id"] == stacked["run_id"]
        assert alone["budget"]["stacked"] == 1
        for split, targets in alone["metrics"].items():
            for target, values in targets.items():
                for key in ("rmse", "mae"):
                    assert stacked["metrics"][split][target][key] == pytest.approx(
                        values[key], rel=1e-7), (split, target, key)
    # resumes per record: nothing left to do
    assert run_sweep(configs, progress=False)["skipped"] == 6
