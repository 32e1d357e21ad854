"""P-EGNN and BLIP-EGNN: identity at initialisation, per-sample potentials, gradients, KL."""

import numpy as np
import pytest
import torch

import uqbench
from uqbench.backbones.adapter import energy_and_forces, make_adapter
from uqbench.backbones.graph import collate
from uqbench.metrics import crps_ensemble
from uqbench.strategies.blip import BLIPModel, kl_log_uniform
from uqbench.strategies.perturbation import ConditionalLayerNorm, PerturbedModel
from uqbench.training import fair_crps

OPTS = {"hidden": 16, "n_layers": 2, "n_rbf": 8}
SMALL = {"patience": 5, "device": "cpu", "backbone_options": OPTS}


def _batch(structures, dtype=torch.float64):
    adapter = make_adapter("egnn", OPTS)
    return collate(adapter.graph_items(structures), dtype)


def test_fair_crps_torch_matches_numpy_metric():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(5, 40)), rng.normal(size=40)
    got = fair_crps(torch.tensor(x), torch.tensor(y)).numpy()
    np.testing.assert_allclose(got, crps_ensemble(y, x, reduce=False), atol=1e-12)


def test_perturbed_model_equals_deterministic_at_init_for_any_z(tiny_nbody):
    torch.manual_seed(0)
    adapter = make_adapter("egnn", OPTS)
    backbone = adapter.build().double()
    batch = _batch(tiny_nbody.splits["test"][:6])
    e_det, f_det = energy_and_forces(backbone, batch)
    model = PerturbedModel(backbone, adapter, noise_dim=32).double()
    assert sum(isinstance(m, ConditionalLayerNorm) for m in model.modules()) == 5
    for scale in (0.0, 1.0, 100.0):
        z = torch.randn(6, 32, dtype=torch.float64) * scale
        e, f = energy_and_forces(model, batch, z=z)
        np.testing.assert_allclose(e.detach(), e_det.detach(), atol=1e-6)
        np.testing.assert_allclose(f.detach(), f_det.detach(), atol=1e-6)


@pytest.fixture(scope="module")
def p_fitted(tiny_nbody):
    method = uqbench.create_method("p-egnn", max_epochs=6, finetune_fraction=0.6667,
                                   finetune_lr=3e-3, n_samples=8, dtype="float64", **SMALL)
    return method.fit(tiny_nbody.splits["train"], tiny_nbody.splits["val"])


def test_crps_finetuning_makes_samples_differ(p_fitted, tiny_nbody):
    pred = p_fitted.predict_distribution(tiny_nbody.splits["test"])
    assert pred.energy_samples.shape == (8, 20)
    assert np.all(pred.energy_std > 1e-6)
    assert not np.allclose(pred.forces_samples[0], pred.forces_samples[1])


def test_each_perturbed_sample_is_a_potential(p_fitted, tiny_nbody):
    model = p_fitted.models_[0]
    structures = tiny_nbody.splits["test"][:2]
    z = torch.randn(2, p_fitted.noise_dim, dtype=torch.float64)
    _, forces = energy_and_forces(model, _batch(structures), z=z)
    h = 1e-5
    for atom, k in ((0, 0), (3, 2), (7, 1)):
        energies = []
        for sign in (1, -1):
            b = _batch(structures)
            b.positions[atom, k] += sign * h
            energies.append(model(b, z=z).sum().item())
        fd = -(energies[0] - energies[1]) / (2 * h)
        assert forces[atom, k].item() == pytest.approx(fd, abs=1e-6)


def test_crps_gradients_reach_perturbation_parameters(tiny_nbody):
    method = uqbench.create_method("p-egnn", dtype="float64", **SMALL)
    method.device_ = torch.device("cpu")
    adapter = method.adapter
    backbone = adapter.build().double()
    model = PerturbedModel(backbone, adapter, method.noise_dim).double().train()
    batch = _batch(tiny_nbody.splits["train"][:8])
    loss = method._crps_loss(model, batch)
    loss.backward()
    for module in model.modules():
        if isinstance(module, ConditionalLayerNorm):
            assert module.gamma.weight.grad is not None
            assert module.gamma.weight.grad.abs().sum() > 0
            assert module.beta.weight.grad.abs().sum() > 0


def test_from_scratch_crps_option(tiny_nbody):
    method = uqbench.create_method("p-egnn", pretrain=False, max_epochs=2,
                                   **SMALL).fit(tiny_nbody.splits["train"][:10])
    assert "pretrain" not in method.history_[0]
    assert method.history_[0]["finetune"]["epochs"] == 2


def test_kl_is_finite_and_non_negative():
    la = torch.linspace(-20, 10, 301)
    kl = kl_log_uniform(la)
    assert torch.isfinite(kl).all() and (kl >= 0).all()
    assert (kl[1:] <= kl[:-1] + 1e-6).all()  # more noise, closer to the prior


@pytest.fixture(scope="module")
def blip_fitted(tiny_nbody):
    method = uqbench.create_method("blip-egnn", max_epochs=4, kl_anneal=0.5, n_samples=8,
                                   dtype="float64", **SMALL)
    return method.fit(tiny_nbody.splits["train"], tiny_nbody.splits["val"])


def test_blip_kl_and_samples(blip_fitted, tiny_nbody):
    kl = blip_fitted.kl(tiny_nbody.splits["test"])
    assert np.isfinite(kl) and kl >= 0
    pred = blip_fitted.predict_distribution(tiny_nbody.splits["test"])
    assert np.all(pred.energy_std > 0)
    assert not np.allclose(pred.energy_samples[0], pred.energy_samples[1])
    model = blip_fitted.models_[0]
    assert isinstance(model, BLIPModel)
    assert set(model.groups) == {"layer0.message", "layer0.update", "layer1.message",
                                 "layer1.update"}


def test_each_blip_sample_is_a_potential(blip_fitted, tiny_nbody):
    model = blip_fitted.models_[0]
    structures = tiny_nbody.splits["test"][:1]
    torch.manual_seed(7)
    _, forces = energy_and_forces(model, _batch(structures))
    h = 1e-5
    for atom, k in ((0, 0), (2, 1)):
        energies = []
        for sign in (1, -1):
            b = _batch(structures)
            b.positions[atom, k] += sign * h
            torch.manual_seed(7)  # the same eps: the same posterior sample
            energies.append(model(b).sum().item())
        assert forces[atom, k].item() == pytest.approx(-(energies[0] - energies[1]) / (2 * h),
                                                       abs=1e-6)


def test_blip_mean_network_is_deterministic(blip_fitted, tiny_nbody):
    batch = _batch(tiny_nbody.splits["test"][:3])
    e1, _ = blip_fitted.mean_prediction(batch)
    e2, _ = blip_fitted.mean_prediction(_batch(tiny_nbody.splits["test"][:3]))
    np.testing.assert_array_equal(e1.detach(), e2.detach())


@pytest.mark.parametrize("fixture", ["p_fitted", "blip_fitted"])
def test_save_load(fixture, request, tiny_nbody, tmp_path):
    method = request.getfixturevalue(fixture)
    method.save(tmp_path / "m")
    loaded = type(method).load(tmp_path / "m")
    test = tiny_nbody.splits["test"][:4]
    torch.manual_seed(1)
    a = method.predict_distribution(test)
    torch.manual_seed(1)
    b = loaded.predict_distribution(test)
    np.testing.assert_allclose(a.energy_samples, b.energy_samples, atol=1e-10)
