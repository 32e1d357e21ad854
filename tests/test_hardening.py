"""Hardening: predictions that cannot be right are refused, NaN seeds stay visible,
records are shared files, a sweep says when runs failed and reruns a broken record."""

from __future__ import annotations

import json
import stat

import numpy as np
import pandas as pd
import pytest

from uqbench.prediction import Prediction
from uqbench.report.tables import markdown, seed_stats, wide
from uqbench.results import read_record, write_json_atomic


def _pred(e_std, f_std=None, e_mean=None):
    n = np.array([2])
    return Prediction(n, np.zeros(1) if e_mean is None else e_mean, np.asarray(e_std, float),
                      np.zeros((2, 3)), np.ones((2, 3)) if f_std is None else f_std)


def test_prediction_refuses_negative_or_unexplained_nonfinite_std():
    with pytest.raises(ValueError, match="negative"):
        _pred([-0.1])
    with pytest.raises(ValueError, match="not finite"):
        _pred([np.nan])
    with pytest.raises(ValueError, match="negative"):
        _pred([0.1], f_std=-np.ones((2, 3)))
    # A NaN prediction (mean and std NaN) flows on, to NaN metrics.
    assert np.isnan(_pred([np.nan], e_mean=np.array([np.nan])).energy_std[0])


def _frame(values):
    rows = [{"dataset": "d", "method": "m", "train_size": 10, "quick": False, "split": "test",
             "target": "energy", "metric": "crps", "value": v, "seed": k, "collapsed": False,
             "fit_s": 1.0, "predict_s_per_structure": 0.1, "n_parameters": 1, "n_samples": 2}
            for k, v in enumerate(values)]
    return pd.DataFrame(rows)


def test_a_nan_seed_is_never_averaged_away():
    frame = _frame([1.0, np.nan])
    stats = seed_stats(frame.groupby("method")["value"])
    assert np.isnan(stats["mean"].iloc[0]) and stats["count"].iloc[0] == 2
    assert stats["n_finite"].iloc[0] == 1
    assert np.isnan(wide(frame)["crps_mean"].iloc[0])
    assert "(1 NaN)" in markdown(frame, "d")
    assert wide(_frame([1.0, 3.0]))["crps_mean"].iloc[0] == 2.0


def test_records_are_world_readable(tmp_path):
    path = tmp_path / "r.json"
    write_json_atomic(path, {"a": 1})
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


@pytest.mark.parametrize("text,why", [
    ('{"schema_version": 1', "JSON"),
    ("[1, 2]", "not a JSON object"),
    (json.dumps({"schema_version": 1, "run_id": "x", "method": {"key": "m"},
                 "dataset": {"key": "d"}, "train_size": 1, "seed": 0, "metrics": [1],
                 "timings": {}, "provenance": {}}), "metrics must map"),
])
def test_broken_records_are_refused(tmp_path, text, why):
    path = tmp_path / "r.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=why):
        read_record(path)


def test_a_sweep_reruns_a_truncated_record_and_exits_nonzero_when_a_run_fails(tmp_path,
                                                                             capsys,
                                                                             monkeypatch):
    from uqbench.cli import main
    from uqbench.runner import planned_path
    from uqbench.sweep import expand, load_sweep

    spec_file = tmp_path / "s.yaml"
    spec_file.write_text(
        "methods: [egnn]\ndatasets: [nbody]\ntrain_sizes: [12]\nseeds: [0]\n"
        "params:\n  - set: {max_steps: 2, backbone_options: {hidden: 8, n_layers: 1}}\n")
    out = tmp_path / "out"
    [cfg] = expand(load_sweep(spec_file), out)
    path = planned_path(cfg)
    path.parent.mkdir(parents=True)
    path.write_text('{"schema_version": 1, "run_')  # a record cut off mid-write
    assert main(["sweep", str(spec_file), "--out", str(out), "--serial"]) == 0
    assert read_record(path)["method"]["key"] == "egnn"
    assert "1 run, 0 already recorded, 0 failed" in capsys.readouterr().out

    def diverge(cfg):
        raise FloatingPointError("the training loss became nan")

    monkeypatch.setattr("uqbench.sweep.run", diverge)
    assert main(["sweep", str(spec_file), "--out", str(tmp_path / "out2"), "--serial"]) == 1
    assert "1 run(s) failed" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["truncate", "empty", "garbage"])
def test_a_corrupt_cache_file_is_regenerated_with_one_line(tmp_path, monkeypatch, capsys,
                                                          damage):
    from uqbench.datasets.nbody import load_nbody

    monkeypatch.setenv("UQBENCH_CACHE", str(tmp_path))
    opts = dict(train_size=5, val_size=5, test_size=5, ood_size=5)
    first = load_nbody(**opts)
    [path] = list(tmp_path.rglob("*.npz"))
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "empty": b"",
                      "garbage": b"not a zip"}[damage])
    again = load_nbody(**opts)
    err = capsys.readouterr().err
    assert "unreadable" in err and str(path) in err
    assert np.array_equal(again.splits["test"][0].positions, first.splits["test"][0].positions)
    assert load_nbody(**opts).sizes() == first.sizes()  # the regenerated file reads back


def test_a_nan_record_beside_a_good_one_leaderboard_and_plot_succeed(tmp_path, capsys):
    import copy

    from uqbench.cli import main
    from uqbench.runner import RunConfig, run

    cfg = RunConfig(method="mcdropout-egnn", dataset="nbody", train_size=12, seed=0,
                    device="cpu", n_samples=3,
                    params={"max_steps": 3, "backbone_options": {"hidden": 8, "n_layers": 1}},
                    dataset_options={"test_size": 8, "ood_size": 8, "val_size": 8},
                    out=tmp_path / "rec")
    path, good = run(cfg)
    bad = copy.deepcopy(good)
    bad["seed"], bad["run_id"] = 1, good["run_id"].replace("seed0", "seed1")
    bad["config"]["seed"] = 1
    bad["config"]["dataset_options"]["seed"] = 1  # the data seed follows the run's
    for split in bad["metrics"].values():
        for target in split.values():
            for key in target:
                target[key] = float("nan")
    for split in bad["curves"].values():
        for target in split.values():
            for key in target:
                target[key] = [float("nan")] * len(target[key])
    bad_path = path.with_name(f"{bad['run_id']}.json")
    write_json_atomic(bad_path, bad)
    assert main(["leaderboard", "--results", str(tmp_path / "rec"), "--out",
                 str(tmp_path / "lb")]) == 0
    table = pd.read_csv(tmp_path / "lb" / "nbody.csv")
    assert table["crps_mean"].isna().all()  # the NaN seed is not averaged away
    assert "NaN" in (tmp_path / "lb" / "nbody.md").read_text()
    assert main(["plot", str(bad_path), "--out", str(tmp_path / "bad.png")]) == 0
    assert (tmp_path / "bad.png").stat().st_size > 0


def test_fit_takes_calculator_labels_and_refuses_nan_labels():
    from ase.calculators.singlepoint import SinglePointCalculator

    import uqbench
    from uqbench.datasets.nbody import load_nbody
    from uqbench.errors import UQBenchError

    data = load_nbody(train_size=8, val_size=4, test_size=4, ood_size=4, use_cache=False)
    read_back = []
    for a in data.splits["train"]:
        b = a.copy()
        b.calc = SinglePointCalculator(b, energy=a.info["energy"], forces=a.arrays["forces"])
        del b.info["energy"]
        del b.arrays["forces"]
        read_back.append(b)
    method = uqbench.create_method("egnn", max_steps=2, device="cpu",
                                   backbone_options={"hidden": 8, "n_layers": 1})
    method.fit(read_back)  # as ase.io.read gives them
    assert read_back[0].calc is not None  # the caller's structures are left as they were
    bad = [a.copy() for a in data.splits["train"]]
    bad[2].info["energy"] = float("nan")
    with pytest.raises(UQBenchError, match="non-finite"):
        method.fit(bad)


def test_file_dataset_refuses_a_nonpositive_train_size(tmp_path):
    from ase.io import write

    import uqbench
    from uqbench.datasets.nbody import load_nbody
    from uqbench.errors import UQBenchError

    frames = load_nbody(train_size=20, val_size=4, test_size=4, ood_size=4,
                        use_cache=False).splits["train"]
    for a in frames:
        a.set_chemical_symbols(["H"] * len(a))
    path = tmp_path / "d.xyz"
    write(path, frames)
    with pytest.raises(UQBenchError, match="positive integer"):
        uqbench.load_dataset(str(path), train_size=-3)


def test_compare_keeps_a_nan_seed_visible():
    from uqbench.report.compare import relative_improvement

    rows = [{"dataset": "d", "train_size": 10, "split": "test", "target": "energy",
             "seed": seed, "metric": "crps", "value": value, "quick": False, "method": m,
             "collapsed": False}
            for seed, (a, b) in enumerate(((1.0, 2.0), (np.nan, 2.0)))
            for m, value in (("a", a), ("b", b))]
    out = relative_improvement(pd.DataFrame(rows), "a", "b", "crps")
    assert out["n_seeds"].tolist() == [2] and out["n_nan"].tolist() == [1]
    assert np.isnan(out["improvement_pct_mean"].iloc[0])


def test_a_missing_extra_is_named_before_any_data(monkeypatch, tmp_path, capsys):
    import sys

    from uqbench.cli import main

    monkeypatch.setitem(sys.modules, "chgnet", None)  # import chgnet -> ImportError
    monkeypatch.setitem(sys.modules, "chgnet.model", None)
    code = main(["run", "--method", "p-chgnet", "--dataset", "silica-bks-small", "--quick",
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "pip install 'uqbench[chgnet]'" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
