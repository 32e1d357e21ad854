"""Composition: nested backbone parameters, a fresh adapter per fit, one configuration per
leaderboard row, plugin metrics everywhere."""

from __future__ import annotations

import uqbench
from uqbench.cli import main
from uqbench.runner import RunConfig, prepare

SMALL = {"backbone_options": {"hidden": 8, "n_layers": 1}, "max_epochs": 1,
         "batch_size": 16, "device": "cpu"}


def test_nested_backbone_parameter_merges_with_quick(tmp_path):
    for params in ({"backbone__hidden": 128}, {"backbone_options": {"hidden": 128}}):
        method, _ = prepare(RunConfig("egnn", "nbody", quick=True, params=params,
                                      out=tmp_path))
        assert method.backbone_options == {"hidden": 128, "n_layers": 2}  # quick's layers
        assert method.get_params(deep=True)["backbone__n_layers"] == 2


def test_nested_parameters_sklearn_style():
    method = uqbench.create_method("egnn")
    deep = method.get_params(deep=True)
    assert deep["backbone__hidden"] == 64 and "backbone__cutoff" in deep
    method.set_params(backbone__hidden=16, backbone__n_layers=1)
    assert method.backbone_options == {"hidden": 16, "n_layers": 1}
    method.set_params(backbone__hidden=32)  # the other option stays
    assert method.backbone_options == {"hidden": 32, "n_layers": 1}
    import pytest

    with pytest.raises(ValueError, match="no option"):
        method.set_params(backbone__colour=1)


def test_set_params_after_fit_takes_effect_in_the_next_fit(tiny_nbody):
    method = uqbench.create_method("egnn", **SMALL)
    method.fit(tiny_nbody.splits["train"][:16])
    first = method.n_parameters
    method.set_params(backbone_options={"hidden": 16, "n_layers": 1})
    method.fit(tiny_nbody.splits["train"][:16])
    assert method.backbone_options_["hidden"] == 16
    assert method.n_parameters > first


def test_unknown_nested_option_is_one_line(tmp_path, capsys):
    code = main(["run", "-m", "egnn", "-d", "nbody", "-p", "backbone__colour=1", "--out",
                 str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no option(s) 'colour'" in err[0], err
