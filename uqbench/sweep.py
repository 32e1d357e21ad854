"""Sweeps: methods x datasets x training sizes x seeds, resumable.

A sweep file (YAML) names the grid and hyperparameter rules applied in order:

    methods: [p-egnn, blip-egnn]
    datasets: [nbody]
    train_sizes: [100, 1000]
    seeds: [0, 1, 2]
    params:                       # optional; later rules win
      - set: {patience: 20}       # every run
      - when: {train_size: 100}   # runs matching every key given
        set: {max_epochs: 300}

A run whose record already exists is skipped, so an interrupted sweep resumes where it
stopped. A run that fails leaves ``<run id>.failed`` (its error) beside where its record
would be, and the sweep goes on.
"""

from __future__ import annotations

import itertools
import json
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml
from tqdm.auto import tqdm

from uqbench.errors import UQBenchError
from uqbench.results import write_json_atomic
from uqbench.runner import RunConfig, planned_path, run

GRID_KEYS = ("methods", "datasets", "train_sizes", "seeds")
OPTIONAL_KEYS = ("params", "quick", "n_samples", "device")


def load_sweep(path: Path) -> dict[str, Any]:
    try:
        spec = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UQBenchError(f"cannot read sweep file {str(path)!r}: {exc}") from None
    if not isinstance(spec, dict):
        raise UQBenchError(f"sweep file {str(path)!r} must be a mapping")
    unknown = set(spec) - set(GRID_KEYS) - set(OPTIONAL_KEYS)
    if unknown:
        raise UQBenchError(f"sweep file: unknown key(s) {', '.join(sorted(unknown))}")
    for key in ("methods", "datasets"):
        if not spec.get(key):
            raise UQBenchError(f"sweep file: {key!r} must list at least one entry")
    for rule in spec.get("params") or []:
        if not isinstance(rule, dict) or "set" not in rule or set(rule) - {"when", "set"}:
            raise UQBenchError(f"sweep file: a params rule needs 'set' (and optional 'when'); "
                               f"got {rule!r}")
    return spec


def expand(spec: dict[str, Any], out: Path) -> list[RunConfig]:
    """Every run configuration of the grid, in a fixed order."""
    configs = []
    grid = itertools.product(spec["datasets"], spec.get("train_sizes") or [None],
                             spec["methods"], spec.get("seeds") or [0])
    for dataset, size, method, seed in grid:
        facts = {"method": method, "dataset": dataset, "train_size": size, "seed": seed}
        params: dict[str, Any] = {}
        for rule in spec.get("params") or []:
            when = rule.get("when") or {}
            if all(facts.get(k) == v for k, v in when.items()):
                params.update(rule["set"])
        configs.append(RunConfig(method=method, dataset=dataset, train_size=size, seed=seed,
                                 device=spec.get("device", "auto"),
                                 n_samples=spec.get("n_samples"),
                                 quick=bool(spec.get("quick", False)), params=params, out=out))
    return configs


def run_one(cfg: RunConfig) -> str:
    """Run one configuration unless already recorded: 'done', 'skipped' or 'failed'."""
    path = planned_path(cfg)
    if path.exists():
        return "skipped"
    try:
        run(cfg)
    except Exception as exc:  # a failed run is recorded; the sweep goes on
        write_json_atomic(path.with_suffix(".failed"), {
            "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(),
            "config": json.loads(json.dumps(cfg.__dict__, default=str)),
        })
        return "failed"
    path.with_suffix(".failed").unlink(missing_ok=True)
    return "done"


def run_sweep(configs: list[RunConfig], progress: bool = True) -> dict[str, int]:
    """Run serially in this process; returns counts of done, skipped and failed runs."""
    counts = {"done": 0, "skipped": 0, "failed": 0}
    bar = tqdm(configs, desc="sweep", unit="run", disable=None if progress else True)
    for cfg in bar:
        bar.set_postfix_str(f"{cfg.method} n={cfg.train_size} seed={cfg.seed}")
        counts[run_one(replace(cfg))] += 1
    return counts
