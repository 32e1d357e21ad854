"""A Dask sweep killed part-way with SIGKILL resumes: every run recorded exactly once."""

import os
import signal
import subprocess
import sys
import time

from uqbench.results import read_record
from uqbench.runner import planned_path
from uqbench.sweep import expand, load_sweep

SPEC = """
methods: [ensemble-egnn, mcdropout-egnn]
datasets: [nbody]
train_sizes: [12, 14, 16, 18]
seeds: [0]
quick: true
params:
  - set: {max_epochs: 2, n_samples: 3}
  - when: {method: ensemble-egnn}
    set: {n_members: 2}
"""


def _sweep(spec, out):
    env = {**os.environ, "TQDM_DISABLE": "1"}
    return subprocess.Popen([sys.executable, "-m", "uqbench.cli", "sweep", str(spec), "--out",
                             str(out), "--workers", "2"], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_killed_sweep_resumes_with_every_run_once(tmp_path):
    spec = tmp_path / "sweep.yaml"
    spec.write_text(SPEC)
    out = tmp_path / "out"
    expected = {planned_path(c) for c in expand(load_sweep(spec), out)}
    assert len(expected) == 8

    proc = _sweep(spec, out)
    deadline = time.time() + 3600  # a hang guard, not a speed test
    while time.time() < deadline and not list(out.rglob("*.json")):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole sweep: client, scheduler and workers
    proc.wait()
    partial = set(out.rglob("*.json"))
    assert 1 <= len(partial) < len(expected), "the kill should land part-way"

    proc = _sweep(spec, out)
    stdout, stderr = proc.communicate(timeout=3600)
    assert proc.returncode == 0, stderr
    assert f"{len(expected) - len(partial)} run, {len(partial)} already recorded" in stdout
    final = set(out.rglob("*.json"))
    assert final == expected
    ids = [read_record(p)["run_id"] for p in final]
    assert len(ids) == len(set(ids)) == 8
    assert not list(out.rglob("*.failed"))
