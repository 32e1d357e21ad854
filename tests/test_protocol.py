"""The study protocol's gates: step budgets, the collapse gate, disjoint trajectories, pure
OOD splits, reproducible records (threads, commit), the almost-fair CRPS, BLIP's prior,
tail and robust-spread diagnostics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scoringrules as sr
import torch

import uqbench
from uqbench import collapse
from uqbench.datasets.nbody import R_CLOSE, load_nbody, min_distance, mix_cycle
from uqbench.metrics import functions as F
from uqbench.metrics.table import SPEARMAN, SPEARMAN_ROBUST, Target
from uqbench.runner import RunConfig, run
from uqbench.training import fair_crps

OPTS = {"hidden": 16, "n_layers": 1}


@pytest.fixture(scope="module")
def small_nbody(tmp_path_factory):
    return load_nbody(train_size=40, val_size=30, test_size=40, ood_size=30, use_cache=False)


# -- datasets -----------------------------------------------------------------------------
def _trajectories(structures):
    return {a.info["trajectory"] for a in structures}


def test_nbody_splits_share_no_trajectory(small_nbody):
    splits = small_nbody.splits
    names = list(splits)
    for i, a in enumerate(names):
        assert all("trajectory" in s.info for s in splits[a])
        for b in names[i + 1:]:
            assert not _trajectories(splits[a]) & _trajectories(splits[b]), (a, b)


def _mix(atoms):
    q = atoms.get_initial_charges()
    return int(min((q > 0).sum(), (q < 0).sum()))


def test_nbody_test_charge_mixes_all_occur_in_the_smallest_training_set():
    data = load_nbody(train_size=100, test_size=500, ood_size=10, use_cache=False)
    train_mixes = {_mix(a) for a in data.splits["train"]}
    assert {_mix(a) for a in data.splits["test"]} <= train_mixes
    assert {_mix(a) for a in data.splits["val"]} <= train_mixes
    assert train_mixes == {0, 1, 2}


def test_mix_cycle_has_the_binomial_proportions():
    cycle = mix_cycle(5)
    assert len(cycle) == 16 and list(cycle[:3]) == [0, 1, 2]
    assert np.bincount(cycle).tolist() == [1, 5, 10]
    assert np.bincount(mix_cycle(10)).tolist() == [1, 10, 45, 120, 210, 126]


def test_nbody_ood_n_keeps_the_id_distance_floor_and_shifts_only_the_count(small_nbody):
    ood = small_nbody.splits["ood-n"]
    assert all(len(a) == 10 for a in ood)
    r = min_distance(np.stack([a.positions for a in ood]))
    assert r.min() >= R_CLOSE
    test = small_nbody.splits["test"]
    assert min_distance(np.stack([a.positions for a in test])).min() >= R_CLOSE


def test_nbody_val_is_fixed_across_training_sizes():
    a = load_nbody(train_size=20, test_size=10, ood_size=10, use_cache=False)
    b = load_nbody(train_size=60, test_size=10, ood_size=10, use_cache=False)
    assert len(a.splits["val"]) == len(b.splits["val"]) == 300
    assert np.array_equal(a.splits["val"][-1].positions, b.splits["val"][-1].positions)


# -- budget -------------------------------------------------------------------------------
@pytest.mark.parametrize("key,stages", [
    ("egnn", {"train"}),
    ("p-egnn", {"pretrain", "finetune"}),
    ("blip-egnn", {"warm_start", "variational"}),
    ("ensemble-egnn", {"train"}),
    ("mcdropout-egnn", {"train"}),
])
def test_every_method_spends_exactly_its_step_budget(small_nbody, key, stages):
    params = dict(max_steps=7, batch_size=8, backbone_options=OPTS, device="cpu",
                  n_samples=3)
    if key == "blip-egnn":
        params["warm_start_fraction"] = 0.5
    if key == "ensemble-egnn":
        params["n_members"] = 2
    method = uqbench.create_method(key, **params)
    method.fit(small_nbody.splits["train"], small_nbody.splits["val"])
    budget = method.budget_
    assert budget["max_steps"] == 7
    assert all(s == 7 for s in budget["steps_per_model"])  # 40 frames / 8 = 5 steps an epoch
    assert set(budget["steps_by_stage"][0]) == stages


def test_p_splits_its_budget_by_finetune_fraction(small_nbody):
    method = uqbench.create_method("p-egnn", max_steps=9, finetune_fraction=1 / 3,
                                   batch_size=8, backbone_options=OPTS, device="cpu")
    method.fit(small_nbody.splits["train"], small_nbody.splits["val"])
    assert method.budget_["steps_by_stage"][0] == {"pretrain": 6, "finetune": 3}


# -- collapse gate ------------------------------------------------------------------------
def test_constant_reference_by_hand(small_nbody):
    train, test = small_nbody.splits["train"], small_nbody.splits["test"]
    ref = collapse.constant_reference(train, {"test": test})
    mean = np.mean([a.info["energy"] / len(a) for a in train])
    e = np.array([a.info["energy"] / len(a) for a in test]) - mean
    f = np.concatenate([a.arrays["forces"].ravel() for a in test])
    assert ref["splits"]["test"]["energy"]["rmse"] == pytest.approx(np.sqrt(np.mean(e**2)))
    assert ref["splits"]["test"]["forces"]["rmse"] == pytest.approx(np.sqrt(np.mean(f**2)))


@pytest.mark.parametrize("energy,forces,expected", [
    (0.5, 0.5, False), (0.5, 0.95, True), (1.05, 0.5, True), (float("nan"), 0.5, True),
    (0.99, 0.89, False),
])
def test_collapse_verdict_thresholds(energy, forces, expected):
    ref = {"splits": {"test": {"energy": {"rmse": 1.0}, "forces": {"rmse": 1.0}}}}
    metrics = {"test": {"energy": {"rmse": energy}, "forces": {"rmse": "NaN" if forces is None
                                                               else forces}}}
    assert collapse.verdict(metrics, ref)["collapsed"] is expected


def _cfg(tmp_path, method, train_size=20, **params):
    return RunConfig(method=method, dataset="nbody", train_size=train_size, seed=3, device="cpu",
                     n_samples=3, params={"backbone_options": OPTS, "batch_size": 10, **params},
                     dataset_options={"test_size": 20, "ood_size": 10, "val_size": 20},
                     out=tmp_path)


def test_an_untrained_model_is_marked_collapsed_and_a_trained_one_is_not(tmp_path):
    _, untrained = run(_cfg(tmp_path, "egnn", max_steps=0))
    assert untrained["collapse"]["collapsed"] is True
    _, trained = run(_cfg(tmp_path, "egnn", train_size=60, max_steps=600, lr=3e-3,
                          patience=10**6, backbone_options={"hidden": 32, "n_layers": 2}))
    assert trained["collapse"]["collapsed"] is False
    assert trained["collapse"]["rmse_ratio"]["forces"] < 0.9


def test_compare_leaves_collapsed_seeds_out_unless_asked(tmp_path):
    import pandas as pd

    from uqbench.report.compare import relative_improvement

    rows = []
    for seed, collapsed in ((0, False), (1, True)):
        for method, value in (("a", 1.0), ("b", 2.0)):
            rows.append({"dataset": "d", "train_size": 10, "split": "test", "target": "energy",
                         "seed": seed, "metric": "crps", "value": value, "quick": False,
                         "method": method, "collapsed": collapsed and method == "b"})
    frame = pd.DataFrame(rows)
    out = relative_improvement(frame, "a", "b", "crps")
    assert out["n_seeds"].tolist() == [1] and out["n_collapsed_excluded"].tolist() == [1]
    assert relative_improvement(frame, "a", "b", "crps", include_collapsed=True)[
        "n_seeds"].tolist() == [2]


def test_compare_on_one_dataset_ignores_the_configurations_of_another():
    import pandas as pd

    from uqbench.errors import UQBenchError
    from uqbench.report.compare import relative_improvement

    rows = []
    for dataset, configs in (("d", ("x",)), ("e", ("y", "z"))):
        for config in configs:
            for method, value in (("a", 1.0), ("b", 2.0)):
                rows.append({"dataset": dataset, "train_size": 10, "split": "test",
                             "target": "energy", "seed": 0, "metric": "crps", "value": value,
                             "quick": False, "method": method, "config": config,
                             "variant": config, "collapsed": False})
    frame = pd.DataFrame(rows)
    with pytest.raises(UQBenchError, match="configurations on e"):
        relative_improvement(frame, "a", "b", "crps")
    out = relative_improvement(frame, "a", "b", "crps", dataset="d")
    assert out["dataset"].tolist() == ["d"]
    assert out["improvement_pct_mean"].tolist() == [50.0]
    with pytest.raises(UQBenchError, match="no results for dataset"):
        relative_improvement(frame, "a", "b", "crps", dataset="nope")


def test_compare_takes_the_raw_rows_where_configurations_differ_only_in_recalibration():
    import pandas as pd

    from uqbench.errors import UQBenchError
    from uqbench.report.compare import relative_improvement

    rows = []
    for config, variant, value in (("r", "raw", 1.0), ("s", "recalibrated scalar", 9.0),
                                   ("i", "recalibrated isotonic", 9.0)):
        for method, v in (("a", value), ("b", 2.0)):
            if method == "b" and config != "r":
                continue
            rows.append({"dataset": "d", "train_size": 10, "split": "test",
                         "target": "energy", "seed": 0, "metric": "crps", "value": v,
                         "quick": False, "method": method, "config": config + method,
                         "variant": variant if method == "a" else "", "collapsed": False})
    frame = pd.DataFrame(rows)
    out = relative_improvement(frame, "a", "b", "crps")
    assert out["improvement_pct_mean"].tolist() == [50.0]  # the raw a (1.0) against b (2.0)
    assert relative_improvement(frame, "a", "b", "crps", method_config="sa")[
        "improvement_pct_mean"].tolist() == [-350.0]
    other = frame.assign(variant=frame["variant"].replace("recalibrated isotonic", "lr=0.1"))
    with pytest.raises(UQBenchError, match="3 configurations on d"):
        relative_improvement(other, "a", "b", "crps")


# -- reproducibility ----------------------------------------------------------------------
def test_records_hold_threads_commit_budget_and_are_bit_identical_when_rerun(tmp_path):
    cfg = _cfg(tmp_path / "a", "p-egnn", max_steps=6, finetune_fraction=0.5)
    _, first = run(cfg)
    cfg.out = tmp_path / "b"
    _, second = run(cfg)
    for rec in (first, second):
        assert rec["threads"] == 1 and rec["provenance"]["threads"] == 1
        assert "commit" in rec and "dirty" in rec
        assert rec["provenance"]["deterministic"] in (True, False)
        assert rec["budget"]["steps_per_model"] == [6]
    assert json.dumps(first["metrics"]) == json.dumps(second["metrics"])
    assert first["run_id"] == second["run_id"]


def test_thread_count_is_part_of_the_run_id(tmp_path):
    from uqbench.runner import identity, prepare

    one = _cfg(tmp_path, "egnn")
    two = _cfg(tmp_path, "egnn")
    two.threads = 2
    ids = [identity(c, *prepare(c))[0] for c in (one, two)]
    assert ids[0] != ids[1]


# -- losses and diagnostics ---------------------------------------------------------------
def test_almost_fair_crps_matches_scoringrules_mix_of_fair_and_standard():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 50)), rng.normal(size=50)
    fair = sr.crps_ensemble(y, x.T, estimator="fair")
    standard = sr.crps_ensemble(y, x.T, estimator="nrg")
    for alpha in (1.0, 0.95, 0.0):
        got = fair_crps(torch.tensor(x), torch.tensor(y), alpha).numpy()
        np.testing.assert_allclose(got, alpha * fair + (1 - alpha) * standard, atol=1e-12)


def test_fair_crps_ignores_a_far_sample_and_almost_fair_does_not():
    x = torch.tensor([[0.0], [0.1], [0.2], [50.0]], requires_grad=True)
    y = torch.tensor([0.05])
    fair_crps(x, y, 1.0).sum().backward()
    assert x.grad[3].item() == 0.0
    x.grad = None
    fair_crps(x, y, 0.95).sum().backward()
    assert x.grad[3].item() > 0.0  # pulled back towards the others


def test_blip_gaussian_kl_equals_torch_distributions():
    from torch.distributions import Normal, kl_divergence

    from uqbench.strategies.blip import kl_gaussian

    w = torch.tensor([[0.3, -0.1, 0.7], [0.05, -0.4, 0.2]], dtype=torch.float64)
    fan_in = w.shape[1]
    log_alpha = torch.tensor([-2.0, 0.5], dtype=torch.float64)
    got = kl_gaussian(log_alpha, w.numel(), 0.5 * torch.log(w**2).sum(), fan_in * (w**2).sum(),
                      -0.5 * np.log(fan_in) * w.numel())
    for k, la in enumerate(log_alpha):
        q = Normal(w, torch.exp(0.5 * la) * w.abs())
        p = Normal(torch.zeros_like(w), torch.full_like(w, fan_in**-0.5))
        assert got[k].item() == pytest.approx(kl_divergence(q, p).sum().item(), rel=1e-12)


def test_blip_gaussian_kl_has_its_minimum_at_a_finite_alpha():
    from uqbench.strategies.blip import kl_gaussian

    la = torch.linspace(-8, 8, 161, dtype=torch.float64)
    w = torch.tensor([0.2, 0.5])  # prior variance 1/fan_in with fan_in = 2: alpha* = 1/(2 w2)
    kl = kl_gaussian(la, 2, 0.5 * torch.log(w**2).sum(), 2 * (w**2).sum(), -0.5 * np.log(2) * 2)
    best = la[int(torch.argmin(kl))].item()
    assert best == pytest.approx(np.log(2 / (2 * (w**2).sum().item())), abs=0.1)
    assert best < 4.0  # below BLIP's cap on log alpha


def test_perturbation_bound_limits_gamma_and_beta():
    from uqbench.strategies.perturbation import ConditionalLayerNorm, _RowContext

    ctx = _RowContext()
    layer = ConditionalLayerNorm(torch.nn.LayerNorm(4), 3, "atom", ctx, bound=0.5)
    torch.nn.init.constant_(layer.gamma.weight, 10.0)
    torch.nn.init.constant_(layer.beta.weight, -10.0)
    h = torch.randn(2, 4)
    ctx.z, ctx.rows = torch.full((1, 3), 5.0), {"atom": torch.zeros(2, dtype=torch.long)}
    out = layer(h)
    base = layer.norm(h)
    np.testing.assert_allclose(out.detach(), (base * 1.5 - 0.5).detach(), atol=1e-5)


def test_robust_spearman_is_not_driven_by_one_far_sample():
    rng = np.random.default_rng(1)
    n, s = 200, 16
    y = np.zeros(n)
    samples = rng.normal(scale=0.1, size=(s, n))
    far = rng.random(n) < 0.2
    samples[0, far] += 50.0  # one far sample: large std AND large error of the mean
    mean, std = samples.mean(0), samples.std(0, ddof=1)
    t = Target("energy", "eV", y, mean, std, samples, np.abs(mean - y), std, std)
    assert SPEARMAN.compute(t) > 0.4
    assert abs(SPEARMAN_ROBUST.compute(t)) < 0.2


def test_tail_ratio_hand_case():
    x = np.array([[0.0], [1.0], [2.0], [3.0], [100.0]])
    # median 2, IQR 3 - 1 = 2, furthest |100 - 2| = 98
    assert F.tail_ratio(x)[0] == pytest.approx(49.0)
    loc, spread = F.robust_location_spread(x)
    assert loc[0] == 2.0 and spread[0] == pytest.approx(2.0 / 1.3489795)


def test_ood_score_for_energy_is_the_total_energy_std_over_sqrt_atoms():
    from uqbench.prediction import Prediction
    from uqbench.scoring import targets

    structs = load_nbody(train_size=2, val_size=2, test_size=2, ood_size=2,
                         use_cache=False).splits["ood-n"]
    n = np.array([len(a) for a in structs])
    pred = Prediction(n, np.zeros(2), np.array([1.0, 2.0]), np.zeros((n.sum(), 3)),
                      np.ones((n.sum(), 3)))
    t = targets(pred, structs)["energy"]
    np.testing.assert_allclose(t.structure_score, [1.0 / np.sqrt(n[0]), 2.0 / np.sqrt(n[1])])
    np.testing.assert_allclose(t.y_std, [1.0 / n[0], 2.0 / n[1]])


def test_energy_ood_score_does_not_count_atoms():
    """Independent per-atom noise of one size: the total-energy std grows as sqrt(n), so
    ranking by it alone tells 10-atom from 5-atom structures perfectly (ROC-AUC 1, what
    the size-only detector scores); the size-fair score tells them apart no better than
    chance, and ood_auroc_size_only records what counting atoms alone achieves."""
    from ase import Atoms

    from uqbench.metrics.table import OOD_AUROC, OOD_AUROC_SIZE_ONLY
    from uqbench.prediction import Prediction
    from uqbench.scoring import targets

    rng = np.random.default_rng(0)

    def split(n_atoms: int, count: int):
        structs = [Atoms("H" * n_atoms, positions=rng.normal(size=(n_atoms, 3)) * 3)
                   for _ in range(count)]
        for a in structs:
            a.info["energy"] = 0.0
            a.arrays["forces"] = np.zeros((n_atoms, 3))
        n = np.full(count, n_atoms)
        sigma_atom = 0.1 * rng.lognormal(0.0, 0.1, size=count)  # per-atom energy std
        pred = Prediction(n, np.zeros(count), sigma_atom * np.sqrt(n_atoms),
                          np.zeros((count * n_atoms, 3)),
                          np.ones((count * n_atoms, 3)) * 0.1)
        return targets(pred, structs)

    small, large = split(5, 200), split(10, 200)
    total = F.ood_auroc(small["energy"].structure_score * np.sqrt(5),
                        large["energy"].structure_score * np.sqrt(10))
    assert total > 0.95
    fair = OOD_AUROC.compute(small["energy"], large["energy"])
    assert abs(fair - 0.5) < 0.08
    assert OOD_AUROC_SIZE_ONLY.compute(small["energy"], large["energy"]) == 1.0
    assert OOD_AUROC_SIZE_ONLY.compute(large["forces"], small["forces"]) == 0.0
    assert OOD_AUROC_SIZE_ONLY.compute(small["forces"], small["forces"]) == 0.5


@pytest.mark.parametrize("warmup", [0, 10])
def test_learning_rate_warmup_shrinks_the_first_adam_steps(tiny_nbody, warmup):
    """A fresh Adam's first step moves every weight by about lr (m / sqrt(v) = sign(g));
    with a warm-up of k steps the first step moves it by about lr / k."""
    from uqbench.backbones.adapter import make_adapter
    from uqbench.training import mse_loss, train

    adapter = make_adapter("egnn", {"hidden": 8, "n_layers": 1})
    items = adapter.graph_items(tiny_nbody.splits["train"][:16])
    torch.manual_seed(0)
    model = adapter.build().double()
    adapter.fit_normalisation(model, items)
    before = [p.detach().clone() for p in model.parameters()]
    lr = 1e-2
    train(model, items, None, lambda m, b: mse_loss(m, b, 1.0, 1.0), max_epochs=1, lr=lr,
          batch_size=16, patience=10, device=torch.device("cpu"), dtype=torch.float64,
          seed=0, max_steps=1, warmup_steps=warmup)
    moved = max(float((p.detach() - b).abs().max())
                for p, b in zip(model.parameters(), before, strict=True))
    expected = lr / warmup if warmup else lr
    assert moved == pytest.approx(expected, rel=1e-3)


def test_group_scores_split_a_pooled_spearman_by_phase():
    """Two phases: within each, error and std rise together; between them the phase with
    the larger errors has the smaller stds, so the pooled ranking turns negative."""
    from ase import Atoms
    from scipy.stats import spearmanr

    from uqbench.metrics.table import SPEARMAN
    from uqbench.prediction import Prediction
    from uqbench.scoring import group_scores, targets

    structures, errors, stds = [], [], []
    for phase, base_error, base_std in (("a", 1.0, 1.0), ("b", 5.0, 0.1)):
        for k in range(6):
            atoms = Atoms("H2", positions=[[0, 0, 0], [1, 0, 0]])
            atoms.info["energy"] = 0.0
            atoms.info["phase"] = phase
            atoms.arrays["forces"] = np.zeros((2, 3))
            structures.append(atoms)
            errors.append(base_error + 0.1 * k)
            stds.append(base_std * (1 + 0.1 * k))
    n = np.full(len(structures), 2)
    errors, stds = np.array(errors), np.array(stds)
    pred = Prediction(n_atoms=n, energy_mean=2 * errors, energy_std=2 * stds,
                      forces_mean=np.zeros((2 * len(n), 3)),
                      forces_std=np.ones((2 * len(n), 3)))
    found = group_scores({"test": pred}, {"test": structures})["test"]
    assert found["key"] == "phase"
    pooled = SPEARMAN.compute(targets(pred, structures)["energy"])
    assert pooled == pytest.approx(spearmanr(errors, stds).statistic) and pooled < 0
    for phase, mask in (("a", slice(0, 6)), ("b", slice(6, 12))):
        group = found["energy"][phase]
        assert group["n"] == 6 and group["spearman"] == pytest.approx(1.0)
        assert group["mean_abs_error"] == pytest.approx(errors[mask].mean())
        assert group["mean_std"] == pytest.approx(stds[mask].mean())
