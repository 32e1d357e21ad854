"""Ensemble and MC dropout on a tiny N-body set: contract, samples, save/load."""

import numpy as np
import pytest
import torch

import uqbench
from uqbench.backbones.adapter import energy_and_forces
from uqbench.backbones.graph import collate

SMALL = {"max_epochs": 3, "patience": 3, "backbone_options": {"hidden": 16, "n_layers": 1},
         "device": "cpu"}


@pytest.fixture(scope="module", params=["ensemble-egnn", "mcdropout-egnn"])
def fitted(request, tiny_nbody):
    extra = {"n_members": 2} if request.param.startswith("ensemble") else {"n_samples": 6}
    method = uqbench.create_method(request.param, **SMALL, **extra)
    return method.fit(tiny_nbody.splits["train"], tiny_nbody.splits["val"])


def test_constructor_does_no_work_and_params_roundtrip():
    m = uqbench.create_method("ensemble-egnn", n_members=4, lr=0.01)
    assert not hasattr(m, "models_")
    assert m.get_params()["n_members"] == 4 and m.get_params()["lr"] == 0.01
    m.set_params(lr=0.5)
    assert m.lr == 0.5
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        m.set_params(nonsense=1)
    with pytest.raises(RuntimeError, match="not fitted"):
        m.predict_distribution([])


def test_prediction_shapes_and_spread(fitted, tiny_nbody):
    test = tiny_nbody.splits["test"]
    pred = fitted.predict_distribution(test)
    s = 2 if fitted.key.startswith("ensemble") else 6
    assert pred.energy_samples.shape == (s, len(test))
    assert pred.forces_samples.shape == (s, 5 * len(test), 3)
    assert np.all(pred.energy_std > 0) and np.all(np.isfinite(pred.forces_mean))
    assert not np.allclose(pred.energy_samples[0], pred.energy_samples[1])
    np.testing.assert_allclose(pred.energy_mean, pred.energy_samples.mean(0))
    assert fitted.n_parameters > 0


def test_each_sample_is_a_potential(tiny_nbody):
    """MC dropout: with fixed masks, sample forces are -grad of that sample's energy."""
    method = uqbench.create_method("mcdropout-egnn", **SMALL, dtype="float64")
    method.fit(tiny_nbody.splits["train"][:10], tiny_nbody.splits["val"][:5])
    model = method.models_[0]
    items = method.adapter.graph_items(tiny_nbody.splits["test"][:1])
    batch = collate(items, torch.float64)
    for layer in method.adapter.dropout_layers(model):
        layer.train()
    torch.manual_seed(3)
    energy, forces = energy_and_forces(model, batch)
    h = 1e-5
    for k in range(3):
        fd = []
        for sign in (1, -1):
            b = collate(items, torch.float64)
            b.positions[0, k] += sign * h
            torch.manual_seed(3)  # the same dropout masks: the same potential
            fd.append(model(b).item())
        assert forces[0, k].item() == pytest.approx(-(fd[0] - fd[1]) / (2 * h), abs=1e-6)


def test_save_load_roundtrip(fitted, tiny_nbody, tmp_path):
    fitted.save(tmp_path / "m")
    loaded = type(fitted).load(tmp_path / "m")
    test = tiny_nbody.splits["test"][:5]
    if fitted.key.startswith("ensemble"):
        a, b = fitted.predict_distribution(test), loaded.predict_distribution(test)
        np.testing.assert_allclose(a.energy_samples, b.energy_samples, atol=1e-6)
    else:
        torch.manual_seed(0)
        a = fitted.predict_distribution(test)
        torch.manual_seed(0)
        b = loaded.predict_distribution(test)
        np.testing.assert_allclose(a.energy_samples, b.energy_samples, atol=1e-6)
    assert loaded.get_params() == fitted.get_params()


def test_training_reduces_the_loss(tiny_nbody):
    method = uqbench.create_method("ensemble-egnn", n_members=2, **{**SMALL, "max_epochs": 8})
    method.fit(tiny_nbody.splits["train"], tiny_nbody.splits["val"])
    for h in method.history_:
        assert h["train_loss"][-1] < h["train_loss"][0]


def test_unlabelled_training_data_is_a_user_error(tiny_nbody):
    bad = [a.copy() for a in tiny_nbody.splits["train"][:3]]
    del bad[1].info["energy"]
    del bad[1].arrays["forces"]
    with pytest.raises(uqbench.UQBenchError, match="neither an energy nor a forces"):
        uqbench.create_method("ensemble-egnn", **SMALL).fit(bad)


def test_deterministic_reference(tiny_nbody):
    method = uqbench.create_method("egnn", **SMALL).fit(tiny_nbody.splits["train"])
    pred = method.predict_distribution(tiny_nbody.splits["test"])
    assert pred.energy_samples.shape == (1, 20)
    assert np.all(pred.energy_std == 0)
    from uqbench.metrics import BUILTIN
    from uqbench.scoring import score

    res, _ = score({"test": pred}, {"test": tiny_nbody.splits["test"]}, list(BUILTIN))
    energy = res["test"]["energy"]
    assert energy["crps"] == pytest.approx(energy["mae"])  # one sample: CRPS is the MAE
    assert energy["n_zero_std"] == 20 and energy["nll"] == np.inf


@pytest.mark.parametrize("key", ["mve-egnn", "evidential-egnn", "llpr-egnn"])
def test_parametric_methods_save_and_load_their_whole_state(key, tiny_nbody, tmp_path):
    """Heads (lazy layers), the LLPR Hessian inverse and calibration: all in the state."""
    method = uqbench.create_method(key, max_steps=6, device="cpu",
                                   backbone_options={"hidden": 8, "n_layers": 1})
    method.fit(tiny_nbody.splits["train"], tiny_nbody.splits["val"])
    method.save(tmp_path / "m")
    loaded = type(method).load(tmp_path / "m")
    test = tiny_nbody.splits["test"][:5]
    a, b = method.predict_distribution(test), loaded.predict_distribution(test)
    for field in ("energy_mean", "energy_std", "forces_std", "energy_df"):
        if getattr(a, field) is not None:
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
