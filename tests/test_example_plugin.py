"""examples/plugin end to end: its method, dataset and metric through every front door.

The plugin must be installed (``pip install -e examples/plugin``, as `.ci/run` does). Where
it is not, the test is skipped, unless ``UQBENCH_REQUIRE_PLUGIN=1`` (set by `.ci/run`).
"""

from __future__ import annotations

import importlib.util
import json
import os

import pandas as pd
import pytest

from uqbench.cli import main


@pytest.fixture(scope="module")
def plugin():
    if importlib.util.find_spec("uqbench_example_plugin") is None:
        message = "examples/plugin is not installed (pip install -e examples/plugin)"
        if os.environ.get("UQBENCH_REQUIRE_PLUGIN") == "1":
            pytest.fail(message)
        pytest.skip(message)
    import uqbench_example_plugin

    return uqbench_example_plugin


def test_plugin_method_dataset_and_metric_everywhere(plugin, tmp_path, capsys):
    results, board = tmp_path / "results", tmp_path / "board"
    small = ["-p", "max_steps=30", "-p", "backbone__hidden=16", "-p", "backbone__n_layers=1"]
    assert main(["run", "-m", "residual-gaussian-egnn", "-d", "lj-argon", "--train-size",
                 "30", *small, "--out", str(results)]) == 0
    table = capsys.readouterr().out
    assert "interval_score_90↓" in table  # the plugin metric in the run's table
    assert main(["run", "-m", "egnn", "-d", "lj-argon", "--train-size", "30", *small,
                 "--out", str(results)]) == 0
    capsys.readouterr()

    (path,) = (results / "lj-argon" / "residual-gaussian-egnn").glob("*.json")
    record = json.loads(path.read_text())
    assert record["n_samples"] is None  # parametric: no samples, none in its id
    assert "n_samples" not in record["method"]["hyperparameters"]
    assert record["metric_info"]["interval_score_90"]["direction"] == "lower"
    score = record["metrics"]["test"]["forces"]["interval_score_90"]
    assert score > 0 and record["metric_errors"] == {}

    assert main(["leaderboard", "--results", str(results), "--out", str(board)]) == 0
    frame = pd.read_csv(board / "results.csv")
    rows = frame[frame["metric"] == "interval_score_90"]
    assert set(rows["unit"]) == {"eV/atom", "eV/Å"} and set(rows["direction"]) == {"lower"}
    assert "interval_score_90 ↓" in (board / "lj-argon.md").read_text()
    assert "Interval score (90 %)" in (board / "lj-argon.html").read_text()

    # 30 steps on 30 structures learn too little to pass the collapse gate: the plumbing of
    # a plugin metric through compare is what is tested here
    assert main(["compare", "--results", str(results), "-m", "residual-gaussian-egnn",
                 "-b", "egnn", "--metric", "interval_score_90", "--include-collapsed"]) == 0
    assert "improvement_pct_mean" in capsys.readouterr().out


def test_plugin_method_uses_public_api_only(plugin):
    import ast
    import inspect

    from uqbench_example_plugin import method

    tree = ast.parse(inspect.getsource(plugin) + "\n" + inspect.getsource(method))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(
                "uqbench"):
            assert node.module in ("uqbench", "uqbench.cards", "uqbench.metrics"), node.module
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not (
                node.attr.startswith("__")):
            pytest.fail(f"the plugin reaches a private attribute: {node.attr}")
