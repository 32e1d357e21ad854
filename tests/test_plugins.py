"""Third-party plugins through entry points: a working one runs, a broken one is reported."""

import os
import subprocess
import sys
import textwrap

import pytest

PLUGIN = textwrap.dedent('''
    """A throwaway uqbench plugin: a parametric (mean + std) method."""
    import numpy as np
    from uqbench import Prediction, UQMethod


    class ConstantGaussian(UQMethod):
        """Predicts the training mean energy per atom and zero forces, with training spread."""

        def __init__(self, inflate: float = 1.0, seed: int = 0, device: str = "auto",
                     n_samples: int = 1):
            self.inflate, self.seed, self.device, self.n_samples = inflate, seed, device, n_samples

        def fit(self, train, val=None):
            e = np.array([a.info["energy"] / len(a) for a in train])
            f = np.concatenate([a.arrays["forces"] for a in train])
            self.mu_, self.sd_ = e.mean(), e.std() * self.inflate
            self.fsd_ = f.std() * self.inflate
            return self

        def predict_distribution(self, structures, n_samples=None):
            n = np.array([len(a) for a in structures])
            return Prediction(n_atoms=n, energy_mean=self.mu_ * n, energy_std=self.sd_ * n,
                              forces_mean=np.zeros((n.sum(), 3)),
                              forces_std=np.full((n.sum(), 3), self.fsd_))
''')


@pytest.fixture
def plugin_path(tmp_path):
    (tmp_path / "uqbench_testplugin.py").write_text(PLUGIN)
    (tmp_path / "uqbench_broken.py").write_text("raise ImportError('needs a missing library')\n")
    dist = tmp_path / "uqbench_testplugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: uqbench-testplugin\n"
                                   "Version: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[uqbench.methods]\nconst-gauss = uqbench_testplugin:ConstantGaussian\n"
        "broken-thing = uqbench_broken:Method\n"
    )
    return tmp_path


def _cli(args, plugin_path, cwd):
    env = {**os.environ, "PYTHONPATH": str(plugin_path), "TQDM_DISABLE": "1"}
    return subprocess.run([sys.executable, "-m", "uqbench.cli", *args], capture_output=True,
                          text=True, env=env, cwd=cwd)


def test_plugin_listed_and_broken_one_reported(plugin_path, tmp_path):
    proc = _cli(["methods"], plugin_path, tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = {ln.split()[0]: ln for ln in proc.stdout.splitlines()}
    assert "Predicts the training mean" in lines["const-gauss"]
    assert "failed to import" in lines["broken-thing"] and "missing library" in lines[
        "broken-thing"]
    assert "ensemble-egnn" in lines  # the others still work


def test_plugin_runs_through_uqbench_run(plugin_path, tmp_path):
    out = tmp_path / "res"
    proc = _cli(["run", "--method", "const-gauss", "--dataset", "nbody", "--quick",
                 "--train-size", "20", "--out", str(out)], plugin_path, tmp_path)
    assert proc.returncode == 0, proc.stderr
    records = list(out.rglob("*.json"))
    assert len(records) == 1 and records[0].parent.name == "const-gauss"
    proc = _cli(["run", "--method", "broken-thing", "--dataset", "nbody"], plugin_path, tmp_path)
    assert proc.returncode == 2
    assert "failed to import" in proc.stderr and "Traceback" not in proc.stderr
