"""Sweeps: methods x datasets x training sizes x seeds, resumable.

A sweep file (YAML) names the grid and hyperparameter rules applied in order:

    methods: [p-egnn, blip-egnn]
    datasets: [nbody]
    train_sizes: [100, 1000]
    seeds: [0, 1, 2]
    threads: 1                    # optional: torch threads per run (recorded)
    recalibrate: scalar           # optional: also write each run recalibrated (calibration split)
                                  # (a list, e.g. [scalar, isotonic]: one record per kind)
    dataset_options:              # optional: loader options per dataset (checked)
      nbody: {test_size: 500}
    params:                       # optional; later rules win
      - set: {patience: 20}       # every run
      - when: {train_size: 100}   # runs matching every key given
        set: {max_epochs: 300}

    profiles:                     # optional: named overlays of the keys above,
      gpu:                        # chosen with `uqbench sweep FILE --profile gpu`
        datasets: [silica-bks]
        params: []

    cluster:                      # optional: an HPC cluster through dask-jobqueue
      type: slurm                 # slurm, pbs, sge, lsf, htcondor, ...
      jobs: 4                     # how many batch jobs to start
      options: {cores: 8, memory: 32GB, walltime: "02:00:00"}

A run whose record already exists is skipped, so an interrupted sweep resumes where it
stopped (records are named by a hash of their configuration and written atomically, so a
run repeated after a crash replaces its own record and is never counted twice). A run that
fails leaves ``<run id>.failed`` (its error) beside where its record would be, and the
sweep goes on. Runs execute on Dask distributed: a local cluster sized to the machine by
default, an existing scheduler by address, or the cluster of the sweep file.
"""

from __future__ import annotations

import itertools
import json
import os
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from uqbench.errors import UQBenchError
from uqbench.params import load_yaml_strict, merge
from uqbench.progress import Progress, note
from uqbench.results import write_json_atomic
from uqbench.runner import DEFAULT_THREADS, RunConfig, RunPlan, plan, run

GRID_KEYS = ("methods", "datasets", "train_sizes", "seeds")
OPTIONAL_KEYS = ("params", "quick", "n_samples", "device", "threads", "cluster", "profiles",
                 "dataset_options", "recalibrate")


def load_sweep(path: Path, profile: str | None = None) -> dict[str, Any]:
    """The sweep file as a mapping; ``profile`` overlays one entry of its ``profiles``."""
    try:
        spec = load_yaml_strict(Path(path).read_text())
    except OSError as exc:
        raise UQBenchError(f"cannot read sweep file {str(path)!r}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UQBenchError(f"cannot read sweep file {str(path)!r}: not valid YAML{where} "
                           f"({getattr(exc, 'problem', None) or type(exc).__name__})") from None
    if not isinstance(spec, dict):
        raise UQBenchError(f"sweep file {str(path)!r} must be a mapping")
    unknown = set(spec) - set(GRID_KEYS) - set(OPTIONAL_KEYS)
    if unknown:
        raise UQBenchError(f"sweep file: unknown key(s) {', '.join(sorted(unknown))}")
    if profile is not None:
        profiles = spec.get("profiles") or {}
        if profile not in profiles:
            raise UQBenchError(f"sweep file: no profile {profile!r}; it has "
                               f"{', '.join(profiles) or 'none'}")
        overlay = profiles[profile] or {}
        bad = set(overlay) - set(GRID_KEYS) - set(OPTIONAL_KEYS) | ({"profiles"} & set(overlay))
        if bad:
            raise UQBenchError(f"sweep file: profile {profile!r} sets unknown key(s) "
                               f"{', '.join(sorted(bad))}")
        spec = {**spec, **overlay}
    _check_grid(spec)
    return spec


#: What a ``when`` clause may test: the facts of one configuration.
WHEN_KEYS = ("method", "dataset", "train_size", "seed")


def _check_grid(spec: dict[str, Any]) -> None:
    """One line for the first thing in the grid that is not what a sweep expects."""
    from uqbench.params import SEED_MAX

    def fail(msg: str):
        raise UQBenchError(f"sweep file: {msg}")

    for key in ("methods", "datasets"):
        value = spec.get(key)
        if not isinstance(value, list) or not value:
            fail(f"{key!r} must be a list of at least one key, e.g. {key}: [a, b]; "
                 f"got {value!r}")
        if not all(isinstance(v, str) for v in value):
            fail(f"{key!r} must list keys (strings); got {value!r}")
    for key, ok, what in (
        ("train_sizes", lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)
                                                and v >= 1), "positive integers (or null)"),
        ("seeds", lambda v: isinstance(v, int) and not isinstance(v, bool)
         and 0 <= v <= SEED_MAX, f"integers in [0, {SEED_MAX}]"),
    ):
        if key not in spec or spec[key] is None:
            continue
        if not isinstance(spec[key], list):
            fail(f"{key!r} must be a list, e.g. {key}: [100, 1000]; got {spec[key]!r}")
        bad = [v for v in spec[key] if not ok(v)]
        if bad:
            fail(f"{key!r} must hold {what}; got {bad[0]!r}")
    params = spec.get("params") or []
    if not isinstance(params, list):
        fail(f"'params' must be a list of rules; got {params!r}")
    for rule in params:
        if not isinstance(rule, dict) or "set" not in rule or set(rule) - {"when", "set"}:
            fail(f"a params rule needs 'set' (and optional 'when'); got {rule!r}")
        when = rule.get("when") or {}
        if not isinstance(when, dict) or set(when) - set(WHEN_KEYS):
            unknown = sorted(set(when) - set(WHEN_KEYS)) if isinstance(when, dict) else when
            fail(f"a 'when' may test {', '.join(WHEN_KEYS)}; got {unknown!r}")
        if not isinstance(rule["set"], dict):
            fail(f"'set' must be a mapping of hyperparameters; got {rule['set']!r}")
    options = spec.get("dataset_options") or {}
    if not isinstance(options, dict) or not all(isinstance(v, dict) for v in options.values()):
        fail("'dataset_options' must map a dataset to its options, e.g. "
             f"dataset_options: {{nbody: {{test_size: 500}}}}; got {options!r}")
    stray = sorted(set(options) - set(spec["datasets"]))
    if stray:
        fail(f"'dataset_options' names {stray[0]!r}, which is not in 'datasets'")
    n_samples, threads = spec.get("n_samples"), spec.get("threads")
    for key, value in (("n_samples", n_samples), ("threads", threads)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            fail(f"{key!r} must be a positive integer; got {value!r}")


#: Grids above this size run only with ``--yes``; above `SWEEP_MAX`, not at all.
SWEEP_CONFIRM = 1_000
SWEEP_MAX = 100_000


def grid_size(spec: dict[str, Any]) -> int:
    """How many configurations `expand` would make, counted without making them."""
    size = 1
    for key, default in (("seeds", [0]), ("datasets", None), ("train_sizes", [None]),
                         ("methods", None)):
        size *= len(spec.get(key) or default or [])
    return size


def expand(spec: dict[str, Any], out: Path) -> list[RunConfig]:
    """Every run configuration of the grid, in a fixed order: seeds outermost, so a sweep
    cut short has every method and size at the first seeds rather than some at all seeds."""
    configs = []
    grid = itertools.product(spec.get("seeds") or [0], spec["datasets"],
                             spec.get("train_sizes") or [None], spec["methods"])
    for seed, dataset, size, method in grid:
        facts = {"method": method, "dataset": dataset, "train_size": size, "seed": seed}
        params: dict[str, Any] = {}
        for rule in spec.get("params") or []:
            when = rule.get("when") or {}
            if all(facts.get(k) == v for k, v in when.items()):
                params = merge(params, rule["set"])  # nested options merge
        configs.append(RunConfig(method=method, dataset=dataset, train_size=size, seed=seed,
                                 device=spec.get("device", "auto"),
                                 n_samples=spec.get("n_samples"),
                                 quick=bool(spec.get("quick", False)), params=params, out=out,
                                 recalibrate=spec.get("recalibrate"),
                                 dataset_options=dict(
                                     (spec.get("dataset_options") or {}).get(dataset) or {}),
                                 threads=spec.get("threads", DEFAULT_THREADS)))
    return configs


def recorded(path: Path) -> bool:
    """Whether ``path`` holds a record that parses (a truncated or foreign file is rerun)."""
    from uqbench.results import read_record

    if not path.exists():
        return False
    try:
        read_record(path)
    except (OSError, ValueError):
        return False
    return True


def _config(item: RunConfig | RunPlan) -> RunConfig:
    return item.cfg if isinstance(item, RunPlan) else item


def run_one(cfg: RunConfig | RunPlan) -> str:
    """Run one configuration (or its plan) unless already recorded: 'done', 'skipped' or
    'failed'."""
    planned = plan(cfg)
    cfg = planned.cfg
    path = planned.paths[0]
    if all(recorded(p) for p in planned.paths):
        return "skipped"
    try:
        run(planned)
    except Exception as exc:  # a failed run is recorded; the sweep goes on
        write_json_atomic(path.with_suffix(".failed"), {
            "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(),
            "config": json.loads(json.dumps(cfg.__dict__, default=str)),
        })
        return "failed"
    path.with_suffix(".failed").unlink(missing_ok=True)
    return "done"


def stack_groups(configs: list[RunConfig | RunPlan]) -> list[list[RunConfig | RunPlan]]:
    """The configurations as tasks: the seeds of one cell (same method, dataset, size and
    settings) form one task where the method trains its models stacked
    (``stack_members``: `uqbench.runner.run_stacked`), every other run is a task of its
    own. Order is kept (a group stands where its first seed stood)."""
    from uqbench import registry

    stacks: dict[str, bool] = {}

    def stacks_models(item: RunConfig | RunPlan) -> bool:
        if isinstance(item, RunPlan):
            return bool(getattr(item.method, "stack_members", False))
        method = item.method
        if method not in stacks:
            try:
                stacks[method] = bool(getattr(registry.create_method(method),
                                              "stack_members", False))
            except Exception:  # an unknown or broken method: its own run says why
                stacks[method] = False
        return stacks[method]

    groups: dict[str, list] = {}
    order: list[list] = []
    for item in configs:
        if not stacks_models(item):
            order.append([item])
            continue
        key = json.dumps({k: v for k, v in _config(item).__dict__.items() if k != "seed"},
                         sort_keys=True, default=str)
        if key not in groups:
            groups[key] = []
            order.append(groups[key])
        groups[key].append(item)
    return order


def run_group(cfgs: list[RunConfig | RunPlan]) -> list[str]:
    """Run a task of `stack_groups` unless recorded: one status per configuration. A
    stacked task that fails runs its seeds one by one (each then recorded or failed as
    `run_one` does)."""
    from uqbench.runner import run_stacked

    cfgs = [plan(c) for c in cfgs]
    status = {i: "skipped" for i in range(len(cfgs))}
    todo = [i for i, c in enumerate(cfgs) if not all(recorded(p) for p in c.paths)]
    try:
        if len(todo) < 2:
            raise LookupError("nothing to stack")
        run_stacked([cfgs[i] for i in todo])
    except Exception as exc:  # the seeds one by one: each records its own failure
        if len(todo) >= 2:
            note("a stacked task failed (%s: %s); its seeds run one by one",
                 type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        status.update({i: run_one(cfgs[i]) for i in todo})
    else:
        for i in todo:
            cfgs[i].paths[0].with_suffix(".failed").unlink(missing_ok=True)
            status[i] = "done"
    return [status[i] for i in range(len(cfgs))]


def _cluster_from_spec(spec: dict[str, Any]):
    try:
        import dask_jobqueue
    except ImportError:
        raise UQBenchError("a 'cluster' in the sweep file needs dask-jobqueue: "
                           "pip install 'uqbench[dist]'") from None
    kind = str(spec.get("type", "")).lower()
    classes = {name[: -len("Cluster")].lower(): getattr(dask_jobqueue, name)
               for name in dir(dask_jobqueue)
               if name.endswith("Cluster") and name != "JobQueueCluster"}
    if kind not in classes:
        raise UQBenchError(f"cluster type {kind!r} unknown; valid: {', '.join(sorted(classes))}")
    cluster = classes[kind](**(spec.get("options") or {}))
    cluster.scale(jobs=int(spec.get("jobs", 1)))
    return cluster


def run_sweep_dask(configs: list[RunConfig], scheduler: str | None = None,
                   n_workers: int | None = None, cluster_spec: dict | None = None,
                   progress: bool = True) -> dict[str, int]:
    """Run on Dask distributed; returns counts of done, skipped and failed runs.

    Recorded runs are skipped before submission; each worker process runs one run at a
    time with the run's own torch thread count (``threads``, recorded with it).
    """
    from distributed import Client, LocalCluster, as_completed

    plans = [plan(c) for c in configs]  # each configuration prepared once, here
    todo = [p for p in plans if not all(recorded(path) for path in p.paths)]
    counts = {"done": 0, "skipped": len(configs) - len(todo), "failed": 0}
    if not todo:
        return counts
    cores = os.cpu_count() or 1
    cluster = None
    if scheduler:
        client = Client(scheduler)
    elif cluster_spec:
        cluster = _cluster_from_spec(cluster_spec)
        client = Client(cluster)
    else:
        workers = n_workers or min(cores, len(todo))
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=":0")
        client = Client(cluster)
    try:
        tasks = stack_groups(todo)
        futures = [client.submit(run_group, group, pure=False) for group in tasks]
        bar = Progress(len(todo), "sweep", unit="run", every=0 if progress else None)
        by_future = dict(zip(futures, tasks, strict=True))
        for future in as_completed(futures):
            group = by_future[future]
            for status, item in zip(future.result(), group, strict=True):
                counts[status] += 1
                bar.update(1, last=f"{status} {_label(_config(item))}")
        bar.close()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return counts


def run_sweep(configs: list[RunConfig], progress: bool = True) -> dict[str, int]:
    """Run serially in this process (no Dask); returns counts of done, skipped, failed."""
    counts = {"done": 0, "skipped": 0, "failed": 0}
    bar = Progress(len(configs), "sweep", unit="run", every=0 if progress else None)
    for group in stack_groups([plan(replace(cfg)) for cfg in configs]):
        for status, item in zip(run_group(group), group, strict=True):
            counts[status] += 1
            bar.update(1, last=f"{status} {_label(_config(item))}")
    bar.close()
    return counts


def _label(cfg: RunConfig) -> str:
    return f"{cfg.method} on {cfg.dataset} n={cfg.train_size or 'default'} seed={cfg.seed}"
