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


def _record(method, seed, hidden, crps, threads=1):
    return {
        "schema_version": 1, "run_id": f"{method}-{hidden}-{seed}", "train_size": 100,
        "seed": seed, "quick": False, "method": {"key": method}, "dataset": {"key": "toy"},
        "config": {"method": method, "params": {"backbone_options": {"hidden": hidden},
                                                "seed": seed},
                   "dataset": "toy", "seed": seed, "train_size": 100, "threads": threads},
        "timings": {"fit_s": 1.0, "predict_s_per_structure": 0.1}, "provenance": {},
        "threads": threads,
        "metrics": {"test": {"energy": {"crps": crps, "rmse": crps}}},
    }


def test_two_configurations_are_two_rows_and_compare_asks_which(tmp_path, capsys):
    from uqbench.report.tables import load_records, tidy, wide
    from uqbench.results import write_json_atomic

    results = tmp_path / "r"
    for seed in (0, 1):
        for hidden, crps in ((32, 1.0), (128, 0.5)):
            write_json_atomic(results / "p" / f"{hidden}-{seed}.json",
                              _record("p", seed, hidden, crps))
        write_json_atomic(results / "b" / f"{seed}.json", _record("b", seed, 64, 2.0))
    frame = tidy(load_records(results)[0])
    table = wide(frame)
    rows = table[table["method"] == "p"]
    assert len(rows) == 2  # never averaged together
    assert sorted(rows["label"]) == ["p [backbone_options.hidden=128]",
                                     "p [backbone_options.hidden=32]"]
    assert sorted(rows["crps_mean"]) == [0.5, 1.0]
    code = main(["compare", "--results", str(results), "-m", "p", "-b", "b"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "2 configurations" in err[0], err
    config = frame[(frame["method"] == "p") & (frame["variant"].str.contains("128"))][
        "config"].iloc[0]
    assert main(["compare", "--results", str(results), "-m", "p", "-b", "b",
                 "--method-config", config[:4]]) == 0
    out = capsys.readouterr().out
    assert "75" in out  # (2.0 - 0.5) / 2.0


def test_a_failing_plugin_metric_loses_only_itself(tiny_nbody):
    from uqbench.metrics.table import BUILTIN, MetricSpec
    from uqbench.scoring import score

    def broken(t):
        raise RuntimeError("division by a plugin")

    method = uqbench.create_method("mcdropout-egnn", n_samples=3, **SMALL)
    method.fit(tiny_nbody.splits["train"][:16])
    pred = {"test": method.predict_distribution(tiny_nbody.splits["test"])}
    errors: dict = {}
    metrics, _ = score(pred, tiny_nbody.splits, list(BUILTIN) + [
        MetricSpec("broken", "Broken", "", "lower", broken)], errors=errors)
    import math

    assert math.isnan(metrics["test"]["energy"]["broken"])
    assert math.isfinite(metrics["test"]["energy"]["crps"])
    assert errors == {"broken": "RuntimeError: division by a plugin"}


def test_training_size_is_not_a_variant_but_recalibration_is():
    from uqbench.report.tables import variants

    def record(rid, size, **extra):
        return {"run_id": rid, "dataset": {"key": "nbody"}, "method": {"key": "mve-egnn"},
                "config": {"method": "mve-egnn", "params": {"lr": 0.001}, "seed": 0,
                           "train_size": size, "dataset_options": {"train_size": size},
                           **extra}}

    found = variants([record("a", 100), record("b", 1000)])
    assert found["a"][1] == found["b"][1] == "" and found["a"][0] == found["b"][0]
    found = variants([record("a", 100), record("c", 100, recalibrate="scalar")])
    assert found["a"][0] != found["c"][0]
    assert (found["a"][1], found["c"][1]) == ("raw", "recalibrated scalar")
