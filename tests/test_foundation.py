"""Foundation backbones (CHGNet on its packaged weights, Orb-v3 from a small local
checkpoint): the wrappers reproduce the libraries, strategies start at the pretrained model,
every sample is a potential, and the user paths (--weights, offline errors) work."""

from dataclasses import replace

import numpy as np
import pytest
import torch

import uqbench
from uqbench.backbones.adapter import energy_and_forces, make_adapter
from uqbench.backbones.graph import collate
from uqbench.cli import main
from uqbench.dataset import VOIGT
from uqbench.datasets.silica_bks import alpha_cristobalite, alpha_quartz
from uqbench.errors import UQBenchError
from uqbench.strategies.blip import BLIPModel
from uqbench.strategies.perturbation import ConditionalLayerNorm, PerturbedModel

pytest.importorskip("chgnet")
pytest.importorskip("orb_models")

ORB_SMALL = dict(latent_dim=32, base_mlp_hidden_dim=64, base_mlp_depth=1,
                 head_mlp_hidden_dim=32, head_mlp_depth=1, num_message_passing_steps=2)


def _cells(bks_labels: bool = False):
    """Two rattled small silica cells, one shifted outside its cell (wrapping must not
    matter)."""
    a = alpha_quartz(small=True)
    a.rattle(0.05, seed=1)
    a.positions += 2.5
    b = alpha_cristobalite(small=True)
    b.rattle(0.05, seed=2)
    if bks_labels:
        from uqbench.datasets.bks import BKSCalculator

        for atoms in (a, b):
            atoms.calc = BKSCalculator()
            atoms.info["energy"] = atoms.get_potential_energy()
            atoms.arrays["forces"] = atoms.get_forces()
            atoms.calc = None
    return [a, b]


@pytest.fixture(scope="module")
def orb_ckpt(tmp_path_factory):
    from orb_models.forcefield import pretrained
    from orb_models.forcefield.atomic_system import SystemConfig

    paths = {}
    for variant in ("conservative", "direct"):
        torch.manual_seed(0)
        build = getattr(pretrained, f"orb_v3_{variant}_architecture")
        model = build(**ORB_SMALL, system_config=SystemConfig(radius=6.0, max_num_neighbors=120))
        path = tmp_path_factory.mktemp("orb") / f"orb-{variant}.ckpt"
        torch.save(model.state_dict(), path)
        paths[variant] = path
    return paths


@pytest.fixture(scope="module")
def chgnet_small_ckpt(tmp_path_factory):
    """A small random CHGNet (readout width 16 rather than 64) as a checkpoint: the
    families whose cost grows with the readout width (LLPR: one backward pass per
    last-layer feature) are tested on it."""
    from chgnet.model import CHGNet

    torch.manual_seed(0)
    model = CHGNet(atom_fea_dim=16, bond_fea_dim=16, angle_fea_dim=16, n_conv=2,
                   atom_conv_hidden_dim=16, bond_conv_hidden_dim=16, mlp_hidden_dims=(16,),
                   num_radial=9, num_angular=9)
    path = tmp_path_factory.mktemp("chgnet") / "chgnet-small.ckpt"
    torch.save({"model": model.as_dict()}, path)
    return path


def _adapter(backbone, orb_ckpt, variant="conservative", **options):
    if backbone == "orb":
        options["weights"] = str(orb_ckpt[variant])
    return make_adapter(backbone, options)


# -- the wrappers reproduce the libraries --------------------------------------------------

def test_chgnet_wrapper_matches_chgnet_predictions():
    from pymatgen.io.ase import AseAtomsAdaptor

    adapter = make_adapter("chgnet", {})
    model = adapter.build().eval()
    cells = _cells()
    e, f = energy_and_forces(model, collate(adapter.graph_items(cells)))
    for k, atoms in enumerate(cells):
        ref = model.model.predict_structure(AseAtomsAdaptor.get_structure(atoms), task="ef")
        assert float(e[k]) == pytest.approx(float(ref["e"]) * len(atoms), abs=2e-4)
        sl = slice(sum(len(c) for c in cells[:k]), sum(len(c) for c in cells[:k + 1]))
        np.testing.assert_allclose(f[sl].detach().numpy(), ref["f"], atol=2e-4)


@pytest.mark.parametrize("variant", ["conservative", "direct"])
def test_orb_checkpoint_loads_through_the_user_path_and_matches_orb(orb_ckpt, variant):
    from orb_models.forcefield.atomic_system import SystemConfig, ase_atoms_to_atom_graphs
    from orb_models.forcefield.base import batch_graphs

    adapter = _adapter("orb", orb_ckpt, variant)
    model = adapter.build().eval()
    saved = torch.load(orb_ckpt[variant], weights_only=True)
    for name, tensor in model.model.state_dict().items():
        torch.testing.assert_close(tensor, saved[name])
    assert model.direct_forces == (variant == "direct")
    cells = _cells()
    e, f = energy_and_forces(model, collate(adapter.graph_items(cells)))
    # Orb's own featurisation, with its default wrapping into the cell.
    graphs = [ase_atoms_to_atom_graphs(a, SystemConfig(6.0, 120)) for a in cells]
    ref = model.model.predict(batch_graphs(graphs))
    forces_key = "forces" if variant == "direct" else "grad_forces"
    np.testing.assert_allclose(e.detach().numpy(), ref["energy"].detach().numpy(), atol=2e-4)
    np.testing.assert_allclose(f.detach().numpy(), ref[forces_key].detach().numpy(), atol=2e-4)


def test_chgnet_stress_matches_chgnet():
    from ase import units
    from pymatgen.io.ase import AseAtomsAdaptor

    adapter = make_adapter("chgnet", {})
    model = adapter.build().eval()
    cells = _cells()
    _, _, s = energy_and_forces(model, collate(adapter.graph_items(cells)), with_stress=True)
    for k, atoms in enumerate(cells):
        ref = model.model.predict_structure(AseAtomsAdaptor.get_structure(atoms), task="efs")
        # CHGNet reports GPa with ASE's sign; uqbench eV/Å^3.
        np.testing.assert_allclose(s[k].detach().numpy() / units.GPa, ref["s"], atol=2e-3)
        assert np.abs(ref["s"]).max() > 1.0


@pytest.mark.parametrize("variant", ["conservative", "direct"])
def test_orb_stress_matches_orb(orb_ckpt, variant):
    """Conservative: the strain derivative equals Orb's own grad_stress; direct: the
    stress head's output, in uqbench's 3 x 3 layout."""
    from orb_models.forcefield.atomic_system import SystemConfig, ase_atoms_to_atom_graphs
    from orb_models.forcefield.base import batch_graphs

    adapter = _adapter("orb", orb_ckpt, variant)
    model = adapter.build().eval()
    cells = _cells()
    _, _, s = energy_and_forces(model, collate(adapter.graph_items(cells)), with_stress=True)
    graphs = [ase_atoms_to_atom_graphs(a, SystemConfig(6.0, 120)) for a in cells]
    ref = model.model.predict(batch_graphs(graphs))
    ref = ref["stress" if variant == "direct" else "grad_stress"].detach().numpy()
    voigt = s.detach().numpy()[:, VOIGT[0], VOIGT[1]]
    np.testing.assert_allclose(voigt, ref, atol=1e-5)
    np.testing.assert_allclose(s.detach().numpy(), s.detach().numpy().transpose(0, 2, 1))
    assert np.abs(ref).max() > 1e-3


def test_each_perturbed_sample_has_its_own_stress(orb_ckpt, numerical_stress):
    """For fixed z the sample's stress is the finite-strain derivative of its own energy
    (Orb in float64); another noise draw's stress is not."""
    adapter = _adapter("orb", orb_ckpt)
    model = PerturbedModel(adapter.build(), adapter, noise_dim=8).double().eval()
    _randomise_conditioning(model)
    model.double()
    atoms = _cells()[0]
    batch = collate(adapter.graph_items([atoms]), torch.float64)
    torch.manual_seed(5)
    z, other = torch.randn(1, 8, dtype=torch.float64), torch.randn(1, 8, dtype=torch.float64)
    _, _, s = energy_and_forces(model, batch, with_stress=True, z=z)
    _, _, s_other = energy_and_forces(model, batch, with_stress=True, z=other)
    def energy(a):
        with torch.no_grad():
            return float(model(collate(adapter.graph_items([a]), torch.float64), z=z))

    num = numerical_stress(energy, atoms)
    np.testing.assert_allclose(s[0].detach().numpy(), num, rtol=1e-5, atol=1e-9)
    assert np.abs(s_other[0].detach().numpy() - num).max() > 100 * np.abs(
        s[0].detach().numpy() - num).max()


def test_chgnet_finetunes_on_stress():
    """With stress labels (BKS), P-CHGNet's CRPS loss carries the stress term."""
    from uqbench.dataset import full_stress
    from uqbench.datasets.bks import BKSCalculator

    cells = _cells(bks_labels=True)
    for atoms in cells:
        atoms.calc = BKSCalculator()
        atoms.info["stress"] = full_stress(atoms.get_stress())
        atoms.calc = None
    fits = {}
    for weight in (0.0, 1.0):
        method = uqbench.create_method("p-chgnet", max_steps=2, batch_size=2,
                                       train_samples=2, n_samples=2, device="cpu",
                                       stress_weight=weight)
        method.fit(cells, cells)
        fits[weight] = method.history_[0]["finetune"]["train_loss"][0]
    assert fits[1.0] > fits[0.0]  # the same noise and weights, plus a positive stress term


# -- strategies start at the pretrained model; samples are potentials ---------------------

@pytest.mark.parametrize("backbone", ["chgnet", "orb"])
def test_perturbed_model_equals_pretrained_at_init(backbone, orb_ckpt):
    adapter = _adapter(backbone, orb_ckpt)
    base = adapter.build().eval()
    batch = collate(adapter.graph_items(_cells()))
    e0, f0 = energy_and_forces(base, batch)
    model = PerturbedModel(base, adapter, noise_dim=32).eval()
    n_norms = sum(isinstance(m, ConditionalLayerNorm) for m in model.modules())
    assert n_norms == len(adapter.norm_sites(adapter.build())) > 0
    for scale in (0.0, 1.0, 100.0):
        z = torch.randn(batch.n_structures, 32) * scale
        e, f = energy_and_forces(model, batch, z=z)
        torch.testing.assert_close(e, e0, atol=1e-5, rtol=0)
        torch.testing.assert_close(f, f0, atol=1e-5, rtol=0)


def _randomise_conditioning(model, scale=0.3):
    torch.manual_seed(3)
    for m in model.modules():
        if isinstance(m, ConditionalLayerNorm):
            for lin in (m.gamma, m.beta):
                torch.nn.init.normal_(lin.weight, std=scale)


@pytest.mark.parametrize("backbone", ["chgnet", "orb"])
def test_each_perturbed_sample_is_a_potential(backbone, orb_ckpt):
    """For fixed z, the sample's forces are minus the finite-difference gradient of its own
    energy. The backbones run in float32, so the central difference (h = 1e-2 Å) is good to
    a few per cent; the tolerance is checked to separate z from another noise draw. (In
    float64 the CHGNet case agrees to 1e-5 at h = 1e-4 Å.)"""
    adapter = _adapter(backbone, orb_ckpt)
    model = PerturbedModel(adapter.build(), adapter, noise_dim=8).eval()
    _randomise_conditioning(model, scale=0.02 if backbone == "chgnet" else 0.3)
    batch = collate(adapter.graph_items(_cells()[:1]))
    torch.manual_seed(5)
    z, other = torch.randn(1, 8), torch.randn(1, 8)
    _, f = energy_and_forces(model, batch, z=z)
    _, f_other = energy_and_forces(model, batch, z=other)
    h, worst, separation = 1e-2, 0.0, 0.0
    for atom, axis in ((0, 0), (4, 2), (7, 1), (2, 1)):
        energies = []
        for sign in (1, -1):
            moved = batch.positions.clone()
            moved[atom, axis] += sign * h
            with torch.no_grad():
                energies.append(float(model(replace(batch, positions=moved), z=z)))
        fd = -(energies[0] - energies[1]) / (2 * h)
        tol = 0.03 + 0.03 * abs(fd)
        worst = max(worst, abs(float(f[atom, axis]) - fd) / tol)
        separation = max(separation, abs(float(f_other[atom, axis]) - fd) / tol)
    assert worst < 1.0, worst
    assert separation > 3.0, separation  # another sample's forces are far outside the tolerance


@pytest.mark.parametrize("backbone", ["chgnet", "orb"])
def test_replicated_batches_match_single_structures(backbone, orb_ckpt):
    """Rows of every domain (atoms, bonds, angles) map to the right structure, so each
    replica of a replicated batch sees its own noise."""
    adapter = _adapter(backbone, orb_ckpt)
    model = PerturbedModel(adapter.build(), adapter, noise_dim=8).eval()
    _randomise_conditioning(model)
    cells = _cells()
    items = adapter.graph_items(cells)
    z = torch.randn(3 * len(cells), 8)
    e_all, _ = energy_and_forces(model, collate(items).repeat(3), z=z)
    for copy in range(3):
        for k, item in enumerate(items):
            e_one, _ = energy_and_forces(model, collate([item]),
                                         z=z[copy * len(cells) + k][None])
            assert float(e_all[copy * len(cells) + k]) == pytest.approx(
                float(e_one[0]), rel=1e-5, abs=1e-3)  # float32 summation order
    # ... while the replicas' own noise moves their energies far beyond that tolerance.
    spread = e_all.reshape(3, len(cells)).std(0) / e_all.reshape(3, len(cells)).abs().mean(0)
    assert torch.all(spread > 1e-3)


@pytest.mark.parametrize("backbone", ["chgnet", "orb"])
def test_blip_on_foundation_backbone(backbone, orb_ckpt):
    adapter = _adapter(backbone, orb_ckpt)
    base = adapter.build().eval()
    model = BLIPModel(base, adapter, hidden=8, init_log_alpha=-2.0).eval()
    batch = collate(adapter.graph_items(_cells()))
    e1, f1 = energy_and_forces(model, batch)
    kl = float(model.last_kl)
    e2, f2 = energy_and_forces(model, batch)
    assert np.isfinite(kl) and kl > 0
    assert not torch.allclose(f1, f2)
    e0, f0 = energy_and_forces(model, batch, stochastic=False)
    eb, fb = energy_and_forces(base, batch)
    torch.testing.assert_close(f0, fb)


@pytest.mark.parametrize("backbone", ["chgnet", "orb"])
def test_dropout_and_ensemble_member_hooks(backbone, orb_ckpt):
    adapter = _adapter(backbone, orb_ckpt, dropout=0.2)
    model = adapter.build()
    layers = adapter.dropout_layers(model)
    assert layers and all(layer.p == 0.2 for layer in layers)
    plain = _adapter(backbone, orb_ckpt).build()
    before = {k: v.clone() for k, v in plain.state_dict().items()}
    torch.manual_seed(1)
    adapter.prepare_member(plain, 1)
    changed = [k for k, v in plain.state_dict().items() if not torch.equal(v, before[k])]
    assert 1 <= len(changed) <= 2  # the last readout layer (weight, bias) only


# -- methods end to end, user paths and errors --------------------------------------------

@pytest.mark.parametrize("key", ["p-chgnet", "blip-chgnet", "ensemble-chgnet",
                                 "mcdropout-chgnet"])
def test_chgnet_methods_fit_and_predict(key):
    train = _cells(bks_labels=True)
    method = uqbench.create_method(key)
    budget = dict(max_epochs=2, batch_size=2, n_samples=3, n_members=2,
                  device="cpu")
    method.set_params(**{k: v for k, v in budget.items() if k in method.get_params()})
    method.fit(train, train)
    pred = method.predict_distribution(train)
    assert pred.forces_samples.shape[1:] == (sum(len(a) for a in train), 3)
    assert np.all(np.isfinite(pred.energy_samples))
    # The energy offset brings the pretrained model onto the BKS energy scale.
    err = np.abs(pred.energy_mean - [a.info["energy"] for a in train]) / [len(a) for a in train]
    assert err.max() < 1.0


def test_orb_quick_run_with_weights_and_offline_message(orb_ckpt, tmp_path, monkeypatch,
                                                        capsys):
    out = tmp_path / "results"
    assert main(["run", "--method", "p-orb", "--dataset", "silica-bks-small", "--quick",
                 "--weights", str(orb_ckpt["conservative"]), "-p", "n_samples=2",
                 "--out", str(out)]) == 0
    (record,) = out.glob("silica-bks-small/p-orb/*.json")
    import json

    rec = json.loads(record.read_text())
    assert rec["method"]["hyperparameters"]["backbone_options"]["weights"] == str(
        orb_ckpt["conservative"].resolve())

    from orb_models.forcefield import pretrained

    def offline(**kwargs):
        raise ConnectionError("no network")

    monkeypatch.setitem(pretrained.ORB_PRETRAINED_MODELS, "orb-v3-conservative-inf-omat",
                        offline)
    capsys.readouterr()
    assert main(["run", "--method", "p-orb", "--dataset", "silica-bks-small", "--quick",
                 "--out", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--weights PATH" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "none").exists() or not any((tmp_path / "none").rglob("*.json"))


def test_bad_weights_and_wrong_backbone_are_one_line_errors(tmp_path, capsys):
    bad = tmp_path / "bad.ckpt"
    torch.save({"something": torch.zeros(2)}, bad)
    with pytest.raises(UQBenchError, match="not an orb-v3 checkpoint"):
        make_adapter("orb", {"weights": str(bad)}).build()
    assert main(["run", "--method", "p-egnn", "--dataset", "silica-bks-small", "--quick",
                 "--weights", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert "pretrained backbones" in capsys.readouterr().err
    with pytest.raises(UQBenchError, match="float32"):
        make_adapter("chgnet", {}).check_dtype(torch.float64)


def test_orb_method_saves_loads_and_runs_in_float64(orb_ckpt, tmp_path):
    train = _cells(bks_labels=True)
    method = uqbench.create_method("p-orb", max_steps=2, batch_size=2, n_samples=3,
                                   device="cpu", dtype="float64",
                                   backbone_options={"weights": str(orb_ckpt["conservative"])})
    method.fit(train, train)
    assert next(method.models_[0].parameters()).dtype == torch.float64
    method.save(tmp_path / "m")
    again = type(method).load(tmp_path / "m")
    batch = collate(method.adapter.graph_items(train), torch.float64)
    e1, f1 = energy_and_forces(method.models_[0], batch)
    e2, f2 = energy_and_forces(again.models_[0], batch)
    torch.testing.assert_close(e1, e2)
    torch.testing.assert_close(f1, f2)
    assert np.isfinite(again.predict_distribution(train).forces_samples).all()


class _Evil:
    """A pickle that would create a file when unpickled."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_chgnet_weights_are_read_as_data_never_as_code(tmp_path, capsys):
    from chgnet.model import CHGNet

    evil, marker = tmp_path / "evil.pt", tmp_path / "pwned"
    torch.save({"model": _Evil(marker)}, evil)
    assert main(["run", "--method", "p-chgnet", "--dataset", "silica-bks-small", "--quick",
                 "--weights", str(evil), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("uqbench: error:") and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err and not marker.exists()
    text = tmp_path / "text.pt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(UQBenchError, match="cannot read CHGNet weights"):
        make_adapter("chgnet", {"weights": str(text)}).build()
    # A genuine checkpoint as CHGNet saves it loads, equal to the model saved.
    model = CHGNet.load(verbose=False)
    good = tmp_path / "good.pt"
    torch.save({"model": model.as_dict()}, good)
    loaded = make_adapter("chgnet", {"weights": str(good)}).build()
    ref = model.state_dict()
    got = loaded.model.state_dict()
    assert set(got) == set(ref)
    for name, tensor in got.items():
        torch.testing.assert_close(tensor, ref[name])


# -- the readout hooks (MVE, evidential, LLPR and shallow ensembles on any backbone) -------

@pytest.mark.parametrize(("backbone", "variant"), [("chgnet", None), ("orb", "conservative"),
                                                   ("orb", "direct")])
def test_readout_hooks_reproduce_the_energy(backbone, variant, orb_ckpt):
    """energy_from_readout(pool_readout(node_features, readout)) is the backbone's own
    energy, and perturbing the readout's last layer changes it (the hook is live)."""
    adapter = _adapter(backbone, orb_ckpt, variant or "conservative")
    model = adapter.build().eval()
    adapter.fit_normalisation(model, adapter.graph_items(_cells(bks_labels=True)))
    batch = collate(adapter.graph_items(_cells()))
    h = adapter.node_features(model, batch)
    assert h.shape[0] == int(batch.n_atoms.sum())
    readout = adapter.readout(model)
    pooled = adapter.pool_readout(model, batch, h, readout).squeeze(-1)
    energy = adapter.energy_from_readout(model, batch, pooled)
    own = energy_and_forces(model, batch)[0] if variant == "direct" else model(batch)
    torch.testing.assert_close(energy, own.detach(), rtol=1e-6, atol=1e-4)
    last = [m for m in readout.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.bias.add_(0.1)
    shifted = adapter.energy_from_readout(
        model, batch, adapter.pool_readout(model, batch, h, readout).squeeze(-1))
    assert (shifted - energy).abs().min() > 1e-3


@pytest.mark.parametrize("backbone", ["chgnet", "orb"])
@pytest.mark.parametrize("family", ["mve", "evidential", "llpr", "shallow-ensemble"])
def test_families_fit_and_predict_on_foundation_backbones(family, backbone, orb_ckpt,
                                                          chgnet_small_ckpt):
    """Each family runs on each foundation backbone (small random checkpoints: CHGNet's
    packaged weights are tested by the hooks test above): a finite mean that stays on the
    data's energy scale, positive stds, and the family's own parts."""
    train = _cells(bks_labels=True)
    method = uqbench.create_method(f"{family}-{backbone}", max_epochs=2, batch_size=2,
                                   device="cpu")
    if family == "shallow-ensemble":
        method.set_params(n_heads=3)
    weights = orb_ckpt["conservative"] if backbone == "orb" else chgnet_small_ckpt
    method.set_params(backbone_options={"weights": str(weights)})
    method.fit(train, train)
    pred = method.predict_distribution(train)
    n_atoms = sum(len(a) for a in train)
    assert pred.forces_mean.shape == (n_atoms, 3)
    assert np.all(np.isfinite(pred.forces_mean)) and np.all(pred.forces_std > 0)
    assert np.all(pred.energy_std > 0)
    err = np.abs(pred.energy_mean - [a.info["energy"] for a in train]) / [len(a) for a in train]
    assert err.max() < 1.0
    if family == "shallow-ensemble":
        assert pred.forces_samples.shape == (method.n_heads, n_atoms, 3)
    if family == "evidential":
        assert np.all(pred.forces_df > 2) and pred.forces_epistemic_std is not None
    if family == "llpr":
        assert method.fitted_info()["calibration"]["alpha2"] > 0


def test_direct_force_orb_is_refused_by_gradient_families(orb_ckpt):
    adapter = _adapter("orb", orb_ckpt, "direct")
    from uqbench.strategies.llpr import LastLayer
    from uqbench.strategies.shallow import ShallowHeads

    for build in (lambda m: LastLayer(m, adapter), lambda m: ShallowHeads(m, adapter, 2, 0.1)):
        with pytest.raises(ValueError, match="conservative backbone"):
            build(adapter.build())


def test_chgnet_pooling_before_its_readout_has_no_atom_states(tmp_path):
    """A CHGNet that pools atom states before its readout (mlp_first = False) has no
    per-atom readout: node_features says so in one line rather than returning the wrong
    tensor."""
    from chgnet.model import CHGNet

    model = CHGNet(atom_fea_dim=16, bond_fea_dim=16, angle_fea_dim=16, n_conv=2,
                   atom_conv_hidden_dim=16, bond_conv_hidden_dim=16, mlp_hidden_dims=(16,),
                   num_radial=9, num_angular=9, mlp_first=False)
    path = tmp_path / "pooled-first.ckpt"
    torch.save({"model": model.as_dict()}, path)
    adapter = make_adapter("chgnet", {"weights": str(path)})
    built = adapter.build()
    batch = collate(adapter.graph_items(_cells()))
    with pytest.raises(ValueError, match="mlp_first = False"):
        adapter.node_features(built, batch)


def test_orb_offline_without_a_cached_copy_is_one_line_naming_the_url(tmp_path, capsys,
                                                                     monkeypatch):
    """No cached weights and no network: the run stops at once (one connection try, not
    minutes of retries) and says which URL to fetch by hand and how to pass the file."""
    pytest.importorskip("orb_models")
    import uqbench.backbones.orb as orb
    from uqbench.cli import main

    tries = []
    monkeypatch.setattr(orb, "cached_weights", lambda url: None)
    monkeypatch.setattr(orb, "reachable", lambda url, timeout=3.0: tries.append(url) or False)
    out = tmp_path / "out"
    assert main(["run", "--method", "p-orb", "--dataset", "silica-bks-small", "--quick",
                 "--out", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "not cached here" in lines[0] and "--weights" in lines[0]
    assert tries and tries[0] in lines[0] and tries[0].startswith("https://")
    assert not out.exists()


def test_orb_pretrained_url_is_the_loaders_own():
    pytest.importorskip("orb_models")
    from orb_models.forcefield import pretrained

    from uqbench.backbones.orb import DEFAULT_MODEL, pretrained_url

    url = pretrained_url(pretrained.ORB_PRETRAINED_MODELS[DEFAULT_MODEL])
    assert url.startswith("https://") and url.endswith(".ckpt")


def _rigid(atoms, q, shift):
    """``atoms`` rotated by ``q`` (positions and cell) and translated."""
    b = atoms.copy()
    b.set_cell(atoms.cell.array @ q.T, scale_atoms=False)
    b.positions = atoms.positions @ q.T + shift
    return b


def _energy_forces(adapter, model, atoms):
    from uqbench.backbones.graph import collate

    batch = collate(adapter.graph_items([atoms]), torch.float32)
    e, f = energy_and_forces(model, batch)[:2]
    return float(e.detach()[0]), f.detach().numpy()


@pytest.mark.parametrize("backbone", ["chgnet", "orb"])
def test_foundation_backbones_are_invariant_and_forces_equivariant(backbone, orb_ckpt):
    """Energies do not change under translation and permutation; CHGNet (built on
    distances and angles) is also rotation invariant with rotating forces. Orb-v3's
    network is not equivariant by construction (it learns rotations from augmented data),
    so for it only translations and permutations are exact."""
    from scipy.spatial.transform import Rotation

    from uqbench.backbones.adapter import make_adapter

    options = {} if backbone == "chgnet" else {"weights": str(orb_ckpt["conservative"])}
    adapter = make_adapter(backbone, options)
    model = adapter.build().eval()  # float32, as the backbones run
    atoms = _cells()[0]
    e0, f0 = _energy_forces(adapter, model, atoms)
    moved = atoms.copy()
    moved.positions += np.array([0.7, -1.3, 2.1])
    e1, f1 = _energy_forces(adapter, model, moved)
    assert e1 == pytest.approx(e0, rel=1e-5)
    np.testing.assert_allclose(f1, f0, atol=2e-4)
    perm = np.random.default_rng(3).permutation(len(atoms))
    e2, f2 = _energy_forces(adapter, model, atoms[perm])
    assert e2 == pytest.approx(e0, rel=1e-5)
    np.testing.assert_allclose(f2, f0[perm], atol=2e-4)
    if backbone == "chgnet":
        q = Rotation.random(random_state=4).as_matrix()
        e3, f3 = _energy_forces(adapter, model, _rigid(atoms, q, np.array([0.2, 0.1, -0.4])))
        assert e3 == pytest.approx(e0, rel=1e-5)
        np.testing.assert_allclose(f3, f0 @ q.T, atol=2e-4)


def test_reference_energies_are_refitted_per_element_before_finetuning():
    """Labels on another reference (pretrained energy + 2.0 eV per Si - 0.7 eV per O) over
    cells of different stoichiometry: the refit recovers both references, so the wrapped
    model predicts the labels before any training; with one stoichiometry only the per-atom
    shift is identifiable, and that is all that is fitted."""
    from uqbench.backbones.adapter import make_adapter
    from uqbench.backbones.graph import collate

    adapter = make_adapter("chgnet", {})
    model = adapter.build().eval()
    cells = _cells()
    cells += [cells[0].copy(), cells[1].copy()]
    del cells[2][[i for i, s in enumerate(cells[2].get_chemical_symbols()) if s == "O"][0]]
    del cells[3][[i for i, s in enumerate(cells[3].get_chemical_symbols()) if s == "Si"][0]]
    items = adapter.graph_items(cells)
    with torch.no_grad():
        raw = model(collate(items, torch.float32)).double().numpy()
    n_si = np.array([a.get_chemical_symbols().count("Si") for a in cells])
    n_o = np.array([a.get_chemical_symbols().count("O") for a in cells])
    labels = raw + 2.0 * n_si - 0.7 * n_o
    for item, energy in zip(items, labels, strict=True):
        item["energy"] = np.array([energy])
        item["forces"] = np.zeros_like(item["positions"])
    adapter.fit_normalisation(model, items)
    with torch.no_grad():
        fitted = model(collate(items, torch.float32)).double().numpy()
    np.testing.assert_allclose(fitted, labels, atol=5e-3)
    per_atom = float(model.energy_shift) + model.element_shift.double().numpy()
    assert per_atom[14] == pytest.approx(2.0, abs=1e-3)
    assert per_atom[8] == pytest.approx(-0.7, abs=1e-3)
    # one stoichiometry (SiO2 only): the per-element corrections vanish
    same = items[:2]
    for item, energy in zip(same, raw[:2] + 0.5 * np.array([len(a) for a in cells[:2]]),
                            strict=True):
        item["energy"] = np.array([energy])
    adapter.fit_normalisation(model, same)
    assert float(model.energy_shift) == pytest.approx(0.5, abs=1e-4)
    assert np.abs(model.element_shift.numpy()).max() < 1e-3
