"""The command line end to end: run -> record -> leaderboard, and bad input -> exit 2."""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from uqbench.cli import main
from uqbench.report.tables import TIDY_COLUMNS
from uqbench.results import read_record

FAST = ["--train-size", "30", "-p", "max_epochs=2", "-p", "n_samples=4"]


def _run_cli(args, **kw):
    env = {**os.environ, "TQDM_DISABLE": "1"}
    return subprocess.run([sys.executable, "-m", "uqbench.cli", *args], capture_output=True,
                          text=True, env=env, **kw)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    for method in ("ensemble-egnn", "mcdropout-egnn"):
        for seed in (0, 1):
            assert main(["run", "--method", method, "--dataset", "nbody", "--quick",
                         "--seed", str(seed), "--out", str(out), *FAST]) == 0
    return out


def test_run_writes_complete_records(results):
    paths = sorted(results.rglob("*.json"))
    assert len(paths) == 4
    for path in paths:
        rec = read_record(path)
        assert path.parent.name == rec["method"]["key"]
        assert path.parent.parent.name == "nbody"
        assert rec["train_size"] == 30 and rec["quick"] is True
        assert set(rec["metrics"]) == {"test", "ood-n", "ood-close"}
        for split, targets in rec["metrics"].items():
            assert set(targets) == {"energy", "forces"}
            for values in targets.values():
                assert {"crps", "nll", "spearman", "rmse", "coverage_95"} <= set(values)
                assert ("ood_auroc" in values) == (split != "test")
        prov = rec["provenance"]
        assert prov["versions"]["torch"] and prov["versions"]["uqbench"]
        assert rec["timings"]["fit_s"] > 0 and rec["n_parameters"] > 0
        assert rec["device"] == "cpu"
        assert not list(path.parent.glob(".*"))  # no temporary files left behind


def test_same_seed_reproduces(results, tmp_path):
    assert main(["run", "--method", "ensemble-egnn", "--dataset", "nbody", "--quick",
                 "--seed", "0", "--out", str(tmp_path), *FAST]) == 0
    new = read_record(next(tmp_path.rglob("*.json")))
    old = read_record(results / "nbody" / "ensemble-egnn" / f"{new['run_id']}.json")
    assert new["metrics"] == old["metrics"]


def test_leaderboard(results, tmp_path):
    assert main(["leaderboard", "--results", str(results), "--out", str(tmp_path)]) == 0
    tidy = pd.read_csv(tmp_path / "results.csv")
    assert list(tidy.columns) == TIDY_COLUMNS
    assert set(tidy["method"]) == {"ensemble-egnn", "mcdropout-egnn"}
    assert set(tidy["seed"]) == {0, 1}
    wide = pd.read_csv(tmp_path / "nbody.csv")
    assert {"crps_mean", "crps_std", "n_seeds"} <= set(wide.columns)
    assert (wide["n_seeds"] == 2).all()
    numeric = ["train_size", "seed", "value", "fit_s", "predict_s_per_structure",
               "n_parameters", "n_samples"]
    for column in numeric:
        assert pd.api.types.is_numeric_dtype(tidy[column]), column
    assert set(tidy["direction"]) <= {"lower", "higher", "target", "count", "reference"}
    assert set(tidy["target"]) == {"energy", "forces"}
    for name in ("calibration", "rmse-vs-rmv", "error-vs-std", "spearman-by-split"):
        assert (tmp_path / f"nbody-{name}.png").stat().st_size > 10_000
    md = (tmp_path / "nbody.md").read_text()
    assert "ensemble-egnn" in md and "| method |" in md
    # Deterministic: a second build is byte-identical.
    first = (tmp_path / "results.csv").read_bytes()
    assert main(["leaderboard", "--results", str(results), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "results.csv").read_bytes() == first


@pytest.mark.parametrize("args, message", [
    (["run", "--method", "nope", "--dataset", "nbody"],
     "valid methods: blip-chgnet, blip-egnn, blip-orb, chgnet, egnn"),
    (["run", "--method", "ensemble-egnn", "--dataset", "nope"], "valid datasets:"),
    (["run", "--method", "ensemble-egnn", "--dataset", "nbody", "--train-size", "0"],
     "train-size"),
    (["run", "--method", "ensemble-egnn", "--dataset", "nbody", "--train-size", "x"],
     "not a valid integer"),
    (["run", "--method", "ensemble-egnn", "--dataset", "nbody", "--device", "cuda"], "CUDA"),
    (["run", "--method", "ensemble-egnn", "--dataset", "nbody", "-p", "bogus=1"],
     "unknown hyperparameter"),
    (["run", "--method", "p-egnn", "--dataset", "nbody", "-p", "stress_weight=abc"],
     "stress_weight must be a number; got 'abc'"),
    (["run", "--method", "p-egnn", "--dataset", "nbody", "-p", "max_epochs=2.5"],
     "max_epochs must be an integer"),
    (["run", "--method", "egnn", "--dataset", "nbody", "--quick", "-p", "stress_weight=-1"],
     "stress_weight must be in [0, inf]"),
    (["run", "--method", "ensemble-egnn", "--dataset", "nbody", "--out", "/proc/nope"],
     "cannot write results"),
    (["leaderboard", "--results", "/nonexistent/dir"], "no results directory"),
    (["run", "--bogus-flag"], "No such option"),
])
def test_bad_input_one_line_exit_2_nothing_written(args, message, tmp_path):
    proc = _run_cli(args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("uqbench: error:"), proc.stderr
    assert message in lines[0]
    assert "Traceback" not in proc.stderr
    assert not any(tmp_path.rglob("*.json"))


def test_unwritable_output_dir(tmp_path):
    if os.geteuid() == 0:
        target = tmp_path / "file-not-dir"
        target.write_text("x")
        out = target / "results"  # a path under a regular file cannot be created, even by root
    else:
        out = tmp_path / "ro"
        out.mkdir()
        out.chmod(0o500)
    assert main(["run", "--method", "ensemble-egnn", "--dataset", "nbody",
                 "--out", str(out)]) == 2


def test_listing_imports_no_torch():
    code = ("import sys; from uqbench.cli import main; main(['methods']); main(['datasets']);"
            "main(['metrics']); print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "ensemble-egnn" in proc.stdout and "nbody" in proc.stdout and "crps" in proc.stdout
    assert proc.stdout.strip().endswith("NO-TORCH")


def test_help_explains():
    proc = _run_cli(["run", "--help"])
    assert proc.returncode == 0
    for flag in ("--method", "--dataset", "--train-size", "--seed", "--device", "--n-samples",
                 "--out", "--quick"):
        assert flag in proc.stdout


def test_plot_one_record(results, tmp_path):
    record = next(results.rglob("*.json"))
    assert main(["plot", str(record), "--out", str(tmp_path / "r.png")]) == 0
    assert (tmp_path / "r.png").stat().st_size > 10_000
    assert main(["plot", str(tmp_path / "missing.json")]) == 2


def test_records_are_strict_json(results):
    for path in results.rglob("*.json"):
        json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"bare {c}"))
