"""Sweeps: grid expansion with rules, resume by skipping recorded runs, failures recorded."""

import pytest

from uqbench.cli import main
from uqbench.errors import UQBenchError
from uqbench.sweep import expand, load_sweep, run_sweep

SPEC = """
methods: [ensemble-egnn, mcdropout-egnn]
datasets: [nbody]
train_sizes: [12, 16]
seeds: [0]
quick: true
params:
  - set: {max_epochs: 1, n_samples: 3}
  - when: {method: ensemble-egnn}
    set: {n_members: 2}
  - when: {train_size: 16, method: mcdropout-egnn}
    set: {dropout: 0.2}
"""


def test_expand_applies_rules_in_order(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(SPEC)
    configs = expand(load_sweep(path), tmp_path / "out")
    assert len(configs) == 4
    by = {(c.method, c.train_size): c.params for c in configs}
    assert by[("ensemble-egnn", 12)] == {"max_epochs": 1, "n_samples": 3, "n_members": 2}
    assert by[("mcdropout-egnn", 16)] == {"max_epochs": 1, "n_samples": 3, "dropout": 0.2}
    assert by[("mcdropout-egnn", 12)] == {"max_epochs": 1, "n_samples": 3}


def test_sweep_resumes_and_records_failures(tmp_path, monkeypatch):
    path = tmp_path / "s.yaml"
    path.write_text(SPEC)
    out = tmp_path / "out"
    configs = expand(load_sweep(path), out)
    assert run_sweep(configs[:2], progress=False) == {"done": 2, "skipped": 0, "failed": 0}
    assert run_sweep(configs, progress=False) == {"done": 2, "skipped": 2, "failed": 0}
    assert len(list(out.rglob("*.json"))) == 4
    bad = configs[0]
    bad.params = {**bad.params, "max_epochs": 2}  # a new id, and a run that fails

    def diverge(cfg):
        raise FloatingPointError("training: the training loss became nan")

    monkeypatch.setattr("uqbench.sweep.run", diverge)
    counts = run_sweep([bad], progress=False)
    assert counts == {"done": 0, "skipped": 0, "failed": 1}
    failed = list(out.rglob("*.failed"))
    assert len(failed) == 1 and "training loss became" in failed[0].read_text()


@pytest.mark.parametrize("text, message", [
    ("methods: []\ndatasets: [nbody]\n", "'methods' must be a list"),
    ("methods: [a]\ndatasets: [nbody]\nbogus: 1\n", "unknown key"),
    ("methods: [a]\ndatasets: [nbody]\nparams: [{when: {seed: 0}}]\n", "needs 'set'"),
    ("- just a list\n", "must be a mapping"),
])
def test_bad_sweep_files(tmp_path, text, message):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(UQBenchError, match=message):
        load_sweep(path)


def test_cli_sweep_validates_before_running(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("methods: [nope]\ndatasets: [nbody]\n")
    assert main(["sweep", str(path), "--out", str(tmp_path / "out")]) == 2
    assert not list((tmp_path / "out").rglob("*.json"))


def test_profiles_overlay_the_sweep_file(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(SPEC + "profiles:\n  big:\n    train_sizes: [40]\n    params: []\n")
    base = expand(load_sweep(path), tmp_path / "out")
    big = expand(load_sweep(path, "big"), tmp_path / "out")
    assert {c.train_size for c in base} == {12, 16}
    assert {c.train_size for c in big} == {40} and all(c.params == {} for c in big)
    with pytest.raises(UQBenchError, match="no profile 'small'; it has big"):
        load_sweep(path, "small")
    assert main(["sweep", str(path), "--profile", "small", "--out", str(tmp_path / "o")]) == 2
    assert "no profile" in capsys.readouterr().err


def test_several_recalibrations_from_one_fit(tmp_path, capsys):
    """recalibrate: [scalar, isotonic] writes the raw record and one per kind from one fit,
    each kind under the id a run of that kind alone has; a rerun skips; a bad kind is one
    line before any work."""
    import json

    from uqbench.runner import each_recalibration, planned_path

    path = tmp_path / "s.yaml"
    path.write_text("methods: [mcdropout-egnn]\ndatasets: [nbody]\ntrain_sizes: [12]\n"
                    "quick: true\nrecalibrate: [scalar, isotonic]\n"
                    "params: [{set: {max_steps: 4, n_samples: 3}}]\n")
    out = tmp_path / "out"
    (cfg,) = expand(load_sweep(path), out)
    assert run_sweep([cfg], progress=False) == {"done": 1, "skipped": 0, "failed": 0}
    records = [json.loads(p.read_text()) for p in out.rglob("*.json")]
    kinds = sorted((r.get("recalibration") or {}).get("method", "raw") for r in records)
    assert kinds == ["isotonic", "raw", "scalar"]
    (raw,) = [r for r in records if not r.get("recalibration")]
    assert all(r["recalibration"]["raw_record"] == raw["run_id"] for r in records
               if r.get("recalibration"))
    for one in each_recalibration(cfg):
        assert planned_path(one).exists()
    assert run_sweep([cfg], progress=False) == {"done": 0, "skipped": 1, "failed": 0}
    capsys.readouterr()
    assert main(["run", "-m", "egnn", "-d", "nbody", "--quick", "--recalibrate",
                 "scalar,bogus", "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert "uqbench: error: --recalibrate must be one or more of" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "o2").exists()


def test_a_sweep_prepares_each_configuration_once(tmp_path, monkeypatch):
    """The plan is made once and passed along: the sweep, the stacked group and the run do
    not validate a configuration again (a pretrained backbone is read once)."""
    import uqbench.runner as runner

    calls = []
    original = runner._prepare

    def counted(cfg):
        calls.append((cfg.method, cfg.seed, cfg.train_size))
        return original(cfg)

    monkeypatch.setattr(runner, "_prepare", counted)
    path = tmp_path / "s.yaml"
    path.write_text(SPEC.replace("seeds: [0]", "seeds: [0, 1]"))
    configs = expand(load_sweep(path), tmp_path / "out")
    assert len(configs) == 8
    assert run_sweep(configs, progress=False) == {"done": 8, "skipped": 0, "failed": 0}
    assert sorted(calls) == sorted((c.method, c.seed, c.train_size) for c in configs)
    calls.clear()
    assert run_sweep(configs, progress=False)["skipped"] == 8  # resuming: once each too
    assert len(calls) == 8


def test_a_changed_loader_default_changes_the_run_id(monkeypatch):
    """The id hashes the loader's resolved options, not only those given: data made under
    another default is another configuration, never a reused record."""
    from uqbench import registry
    from uqbench.runner import RunConfig, identity, prepare

    cfg = RunConfig(method="egnn", dataset="nbody", train_size=20, quick=True)
    method, data_kwargs = prepare(cfg)
    before, config = identity(cfg, method, data_kwargs)
    assert config["dataset_defaults"]["test_size"] == 500
    loader = registry.dataset_loader("nbody")

    def changed(*args, test_size: int = 400, **kwargs):
        return loader(*args, test_size=test_size, **kwargs)

    monkeypatch.setattr(registry, "dataset_loader", lambda key: changed)
    after, config = identity(cfg, method, data_kwargs)
    assert config["dataset_defaults"]["test_size"] == 400
    assert after != before
