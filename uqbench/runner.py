"""One run: dataset -> fit -> predict every scored split -> score -> record."""

from __future__ import annotations

import inspect
import os
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from uqbench import registry
from uqbench.cache import check_cache_dir
from uqbench.dataset import CALIBRATION_RULE, carve_calibration, label_counts, overlaps
from uqbench.errors import UQBenchError
from uqbench.metrics.table import spec_info
from uqbench.params import MAX_SAMPLES, check_kind, merge
from uqbench.progress import log_to_file, note, quiet
from uqbench.results import (
    SCHEMA_VERSION,
    check_writable,
    provenance,
    record_path,
    run_id,
    write_json_atomic,
)

#: torch threads per run unless told otherwise: the models are small, and studies run one
#: worker per core. The count changes floating-point summation order, so it is part of
#: every record and of its run id.
DEFAULT_THREADS = 1


@dataclass
class RunConfig:
    method: str
    dataset: str
    train_size: int | None = None
    seed: int = 0
    device: str = "auto"
    n_samples: int | None = None
    quick: bool = False
    params: dict[str, Any] = field(default_factory=dict)
    dataset_options: dict[str, Any] = field(default_factory=dict)
    out: Path = Path("results")
    weights: str | None = None  # a local checkpoint for a pretrained backbone
    threads: int = DEFAULT_THREADS  # torch's intra-op threads for this run
    # post-hoc recalibration on val (uqbench.recalibration): one kind, or several written
    # from the one fit
    recalibrate: str | list[str] | tuple[str, ...] | None = None
    # accept structures that appear in two splits (recorded; refused by default: a leak)
    allow_overlap: bool = False


#: Backbones that start from pretrained weights (and take ``--weights``).
PRETRAINED_BACKBONES = ("chgnet", "orb")


def metric_specs() -> list:
    """Every registered metric that loads and is a `MetricSpec`; the others are named in a
    warning and skipped (a broken plugin costs only itself)."""
    import sys

    from uqbench.metrics.table import MetricSpec

    specs = []
    for key, entry in registry.entries("metric").items():
        if entry.error is not None:
            print(f"uqbench: warning: metric {key!r} skipped: {entry.error}", file=sys.stderr)
        elif not isinstance(entry.obj, MetricSpec):
            print(f"uqbench: warning: metric {key!r} skipped: {entry.target} is a "
                  f"{type(entry.obj).__name__}, not a uqbench.metrics.MetricSpec",
                  file=sys.stderr)
        else:
            specs.append(entry.obj)
    return specs


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


#: Loader parameters the runner sets itself, from the run's own options.
RUNNER_DATASET_OPTIONS = {"train_size": "--train-size", "quick": "--quick"}


def check_dataset_options(key: str, loader, options: dict[str, Any]) -> None:
    """Dataset options must be parameters of the loader, of the kind of its default."""
    params = inspect.signature(loader).parameters
    for name, value in options.items():
        if name in RUNNER_DATASET_OPTIONS:
            raise UQBenchError(f"set the dataset's {name} with {RUNNER_DATASET_OPTIONS[name]}, "
                               "not as a dataset option")
        if name not in params or params[name].kind in (inspect.Parameter.VAR_KEYWORD,
                                                       inspect.Parameter.VAR_POSITIONAL):
            kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
            takes = sorted(p for p, prm in params.items()
                           if p not in RUNNER_DATASET_OPTIONS and prm.kind in kinds)
            raise UQBenchError(f"dataset {key!r} takes no option {name!r}; its options: "
                               f"{', '.join(takes) or 'none'}")
        default = params[name].default
        try:
            check_kind(name, value, None if default is inspect.Parameter.empty else default)
        except ValueError as exc:
            raise UQBenchError(f"dataset {key!r}: option {exc}") from None


def _deep_params(method) -> dict[str, Any]:
    """A method's hyperparameters, nested backbone options included where it has them."""
    try:
        return method.get_params(deep=True)
    except TypeError:  # a plugin's get_params without ``deep``
        return method.get_params()


def prepare(cfg: RunConfig):
    """Validate everything cheap before any expensive work; returns (method, loader kwargs).
    Silent but for errors (a pretrained backbone's weights are read here, unannounced)."""
    with quiet():
        return _prepare(cfg)


def _prepare(cfg: RunConfig):
    if cfg.train_size is not None and cfg.train_size < 1:
        raise UQBenchError(f"--train-size must be a positive integer; got {cfg.train_size}")
    if isinstance(cfg.threads, bool) or not isinstance(cfg.threads, int) or cfg.threads < 1:
        raise UQBenchError(f"--threads must be a positive integer; got {cfg.threads!r}")
    if cfg.recalibrate is not None:
        from uqbench.recalibration import METHODS

        kinds = recalibrations(cfg)
        bad = [k for k in kinds if k not in METHODS]
        if bad or not kinds or len(set(kinds)) < len(kinds):
            raise UQBenchError(f"--recalibrate must be one or more of {', '.join(METHODS)}, "
                               f"each once; got {','.join(map(str, kinds)) or 'none'}")
    if cfg.n_samples is not None and not 1 <= cfg.n_samples <= MAX_SAMPLES:
        raise UQBenchError(f"--n-samples must be a whole number from 1 to {MAX_SAMPLES}; "
                           f"got {cfg.n_samples}")
    runner_set = {"seed": "--seed", "device": "--device"}
    clash = sorted(set(cfg.params) & set(runner_set))
    if clash:
        raise UQBenchError(f"set {clash[0]} with {runner_set[clash[0]]}, not as a "
                           "hyperparameter (the runner sets it and records it)")
    loader = registry.dataset_loader(cfg.dataset)
    registry.dataset_name(cfg.dataset)  # a spec file is read and checked here
    method = registry.create_method(cfg.method)
    defaults = _deep_params(method)
    user = merge(cfg.params)
    runner_set = {"seed": cfg.seed, "device": cfg.device}
    if cfg.n_samples is not None and "n_samples" in defaults:  # parametric: none to set
        runner_set["n_samples"] = cfg.n_samples
    # --quick's settings, then the user's, then the runner's; nested options merge.
    overrides = merge(method.quick_params if cfg.quick else {}, cfg.params, runner_set)
    try:
        # (an unknown backbone__ option is named by set_params, with the valid ones)
        unknown = {k for k in user if k not in defaults and not k.startswith("backbone__")}
        if unknown:
            raise ValueError(f"unknown hyperparameter(s) {', '.join(sorted(unknown))}")
        for key, value in user.items():
            check_kind(key, value, defaults.get(key))
        method.set_params(**{k: v for k, v in overrides.items()
                             if k in defaults or k.startswith("backbone__")})
        method.validate_params()
    except ValueError as exc:
        raise UQBenchError(f"method {cfg.method!r}: {exc}") from None
    if cfg.weights:
        if getattr(method, "backbone", None) not in PRETRAINED_BACKBONES:
            raise UQBenchError(f"--weights applies to pretrained backbones "
                               f"({', '.join(PRETRAINED_BACKBONES)}); {cfg.method!r} has none")
        method.set_params(backbone_options={**(method.backbone_options or {}),
                                            "weights": cfg.weights})
    from uqbench.training import resolve_device

    resolve_device(cfg.device)
    try:
        method.check_prerequisites()
    except ValueError as exc:
        raise UQBenchError(f"method {cfg.method!r}: {exc}") from None
    data_kwargs = dict(cfg.dataset_options)
    accepted = inspect.signature(loader).parameters
    check_dataset_options(cfg.dataset, loader, data_kwargs)
    if cfg.train_size is not None:
        data_kwargs["train_size"] = cfg.train_size
    if "seed" in accepted and "seed" not in data_kwargs:
        # seeds vary the data with the model (another training subset, other
        # trajectories), so an interval over seeds covers both
        data_kwargs["seed"] = cfg.seed
    if cfg.quick and "quick" in accepted:
        data_kwargs["quick"] = True
    if cfg.quick:
        for key, value in method.quick_data.items():
            if key in accepted and key not in data_kwargs:
                data_kwargs[key] = value
    check_writable(cfg.out)
    check_cache_dir()
    return method, data_kwargs


#: Hyperparameters added after records were published, with the value under which those
#: records were made (stress_weight: no published dataset carried stress labels, so any
#: weight gave the same runs; lr_warmup: BLIP's records before it had none): left out of
#: the hash at that value, so earlier records keep their ids (a resumed study does not
#: rerun them); any other value gives a new id.
ADDED_PARAMS = {"stress_weight": 1.0, "lr_warmup": 0.0}


def identity(cfg: RunConfig, method, data_kwargs: dict) -> tuple[str, dict]:
    """The run's id and the configuration it hashes (known before any data is made)."""
    params = {k: v for k, v in method.get_params().items()
              if not (k in ADDED_PARAMS and v == ADDED_PARAMS[k])}
    config = {"method": cfg.method, "params": params, "dataset": cfg.dataset,
              "dataset_options": data_kwargs, "train_size": cfg.train_size or "default",
              "seed": cfg.seed, "quick": cfg.quick,
              "n_samples": cfg.n_samples if "n_samples" in params else None,
              "threads": cfg.threads, "calibration": CALIBRATION_RULE}
    if cfg.recalibrate:  # only when set: earlier records keep their ids
        config["recalibrate"] = cfg.recalibrate
    if cfg.allow_overlap:
        config["allow_overlap"] = True
    # The loader's defaults for every option not given: a changed default makes new data,
    # so it must make a new id rather than silently reuse an old record.
    config["dataset_defaults"] = dataset_defaults(cfg.dataset, data_kwargs)
    return run_id(config), config


def dataset_defaults(dataset: str, data_kwargs: dict) -> dict[str, Any]:
    """The loader's default value of each option the run does not set."""
    loader = registry.dataset_loader(dataset)
    found = {}
    for name, param in inspect.signature(loader).parameters.items():
        if (name in data_kwargs or param.default is inspect.Parameter.empty
                or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL)):
            continue
        value = param.default
        found[name] = value if isinstance(value, (str, int, float, bool, type(None))) \
            else repr(value)
    return found


def fit_calibrated(method, train: list, val: list | None, calibration: list | None):
    """``method.fit(train, val)``, handing the calibration split to a method whose ``fit``
    takes one (``calibration=``: LLPR fits its constants there); a plugin's
    ``fit(train, val)`` is called as it is."""
    accepts = "calibration" in inspect.signature(method.fit).parameters
    if accepts and calibration:
        return method.fit(train, val, calibration=calibration)
    return method.fit(train, val)


def recalibrations(cfg: RunConfig) -> tuple[str, ...]:
    """The recalibration kinds of ``cfg``, in order (none, one, or several): a kind, a
    comma-separated string of kinds (``--recalibrate scalar,isotonic``) or a list (a
    sweep file's)."""
    if cfg.recalibrate is None:
        return ()
    if isinstance(cfg.recalibrate, str):
        return tuple(k.strip() for k in cfg.recalibrate.split(","))
    if isinstance(cfg.recalibrate, list | tuple):
        return tuple(cfg.recalibrate)
    raise UQBenchError(f"--recalibrate must be a kind or a list of kinds; got "
                       f"{cfg.recalibrate!r}")


def each_recalibration(cfg: RunConfig) -> list[RunConfig]:
    """``cfg`` once per recalibration kind (each kind's record is its own configuration);
    ``[cfg]`` without recalibration."""
    from dataclasses import replace as replaced

    return [replaced(cfg, recalibrate=k) for k in recalibrations(cfg)] or [cfg]


@dataclass(frozen=True)
class RunPlan:
    """One run, planned once: its configuration, the method and loader options `prepare`
    made of it, and the records it writes. The CLI, a sweep and the runner pass the plan
    along, so a configuration is validated once (a pretrained backbone's weights are read
    once) however many hands it passes through."""

    cfg: RunConfig
    method: Any = field(compare=False, repr=False)
    data_kwargs: dict = field(compare=False)
    paths: tuple[Path, ...] = ()


def plan(cfg: RunConfig | RunPlan) -> RunPlan:
    """The plan of ``cfg`` (a plan is returned as it is)."""
    if isinstance(cfg, RunPlan):
        return cfg
    method, data_kwargs = prepare(cfg)
    return RunPlan(cfg, method, data_kwargs, tuple(_paths(cfg, method, data_kwargs)))


def planned_paths(cfg: RunConfig | RunPlan) -> list[Path]:
    """Where the records a run of ``cfg`` writes (one per recalibration kind, else its one
    record) are or will be: the run is done when all exist. At a dataset's default
    training size a record is named by the size found when the data is loaded, so an
    existing one is found by the rest of its name (seed and configuration hash)."""
    return list(plan(cfg).paths)


def _paths(cfg: RunConfig, method, data_kwargs: dict) -> list[Path]:
    paths = []
    for one in each_recalibration(cfg):
        rid, _ = identity(one, method, data_kwargs)
        path = record_path(cfg.out, registry.dataset_name(cfg.dataset), cfg.method, rid)
        found = (sorted(path.parent.glob(f"n*-{rid.split('-', 1)[1]}.json"))
                 if cfg.train_size is None else [])
        paths.append(found[0] if found else path)
    return paths


def planned_path(cfg: RunConfig | RunPlan) -> Path:
    """Where the (first) record of ``cfg`` is or will be written (`planned_paths`)."""
    return planned_paths(cfg)[0]


def run(cfg: RunConfig | RunPlan) -> tuple[Path, dict]:
    """Do the whole flow for one configuration (or its plan) and write its record; returns
    (path, record) (with several recalibration kinds, the last kind's). Progress goes to
    the ``uqbench`` logger and to ``<record>.log`` beside the (first recalibrated) record."""
    planned = plan(cfg)
    cfg, method, data_kwargs = planned.cfg, planned.method, planned.data_kwargs
    rid, _ = identity(each_recalibration(cfg)[0], method, data_kwargs)
    name = registry.dataset_name(cfg.dataset)
    path = record_path(cfg.out, name, cfg.method, rid)
    with run_lock(path.with_suffix(".lock")):
        log = log_to_file(path.with_suffix(".log"))
        try:
            with log:
                return _run(cfg, method, data_kwargs, log)
        except UQBenchError:  # bad input found late (in a data file): one line, nothing left
            log.discard()
            raise


class run_lock:  # noqa: N801 (a context manager, like open)
    """Only one process runs a configuration at a time: a ``<record>.lock`` file holding
    the owner's process id, made exclusively; a second run of the configuration stops with
    one line naming the first (a lock whose process is gone is taken over). The lock and
    the directories made for it go when the block ends."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._made: list[Path] = []

    def __enter__(self) -> run_lock:
        self._made = [p for p in (self.path.parent, *self.path.parent.parents)
                      if not p.exists()]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = _lock_owner(self.path)
                if owner is not None:
                    raise UQBenchError(
                        f"this configuration is already running (process {owner}; lock "
                        f"{self.path}): wait for it, or remove the lock if that process is "
                        "not uqbench") from None
                self.path.unlink(missing_ok=True)  # its process is gone: a stale lock
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(str(os.getpid()))
            return self
        raise UQBenchError(f"cannot take the lock {self.path}")

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)
        for directory in self._made:  # deepest first, where still empty
            try:
                directory.rmdir()
            except OSError:
                pass


def _lock_owner(path: Path) -> int | None:
    """The process id in a lock file while that process lives, else None."""
    try:
        pid = int(path.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid if pid != os.getpid() else None


def _run(cfg: RunConfig, method, data_kwargs: dict, log) -> tuple[Path, dict]:
    import torch

    rid, _ = identity(each_recalibration(cfg)[0], method, data_kwargs)
    name = registry.dataset_name(cfg.dataset)
    torch.set_num_threads(cfg.threads)
    _seed_everything(cfg.seed)
    dataset, data_s = load_run_dataset(cfg, data_kwargs, method)
    note("run: %s on %s, seed %d, %d thread(s), configuration %s", cfg.method, name,
         cfg.seed, cfg.threads, rid.rsplit("-", 1)[1])
    if cfg.train_size is None:  # name the record by the size the dataset chose
        log.move(record_path(cfg.out, name, cfg.method, _named(
            rid, cfg, len(dataset.splits["train"]))).with_suffix(".log"))
    t0 = time.perf_counter()
    note("fitting %s on %d structures", cfg.method, len(dataset.splits["train"]))
    fit_calibrated(method, dataset.splits["train"], dataset.splits.get("val"),
                   dataset.splits.get("calibration"))
    fit_s = time.perf_counter() - t0
    note("fit done in %.1f s", fit_s)
    return _finish(cfg, method, data_kwargs, dataset, data_s, fit_s)


def _named(rid: str, cfg: RunConfig, train_size: int) -> str:
    """A run id named by the training size found, for a run at the dataset's default
    size."""
    return f"n{train_size}-{rid.split('-', 1)[1]}" if cfg.train_size is None else rid


def load_run_dataset(cfg: RunConfig, data_kwargs: dict, method=None):
    """The run's dataset, with its calibration split carved from val where it has none,
    and the seconds it took; its structures checked for ``method``'s backbone (one line
    before anything else is said, e.g. a cell too small for its cutoff)."""
    name = registry.dataset_name(cfg.dataset)
    t0 = time.perf_counter()
    # A user's file is checked as it is read: its errors come as one line, so its (quick)
    # reading is silent; generated datasets report their generation.
    with quiet() if registry.is_file_dataset(cfg.dataset) else nullcontext():
        dataset = registry.dataset_loader(cfg.dataset)(**data_kwargs)
    data_s = time.perf_counter() - t0
    check = getattr(method, "check_structures", None)
    if check is not None:
        check([a for frames in dataset.splits.values() for a in frames])
    shared = overlaps(dataset.splits)
    if shared:
        listed = "; ".join(f"{b} shares {n} of its {len(dataset.splits[b])} structures with "
                           f"{a}" for a, b, n in shared)
        if not cfg.allow_overlap:
            raise UQBenchError(f"{name}: identical structures in two splits ({listed}): "
                               "scores on them would not be held out (--allow-overlap to "
                               "accept, recorded)")
        note("splits overlap, accepted by --allow-overlap: %s", listed)
    if not dataset.splits.get("calibration") and dataset.splits.get("val"):
        dataset.splits["val"], dataset.splits["calibration"] = carve_calibration(
            dataset.splits["val"], cfg.seed)
    if cfg.recalibrate and not dataset.splits.get("calibration"):  # before the fit
        raise UQBenchError(f"--recalibrate needs a calibration split (half of val, which "
                           f"needs at least 2 frames); {name} has none")
    note("dataset ready in %.1f s: %s", data_s,
         ", ".join(f"{k} {v}" for k, v in dataset.sizes().items()))
    return dataset, data_s


def _finish(cfg: RunConfig, method, data_kwargs: dict, dataset, data_s: float,
            fit_s: float) -> tuple[Path, dict]:
    """Predict every scored split of a fitted method, score, and write the run's record
    (and one per recalibration kind); returns the last (path, record)."""
    name = registry.dataset_name(cfg.dataset)
    train_size = len(dataset.splits["train"])
    rid, config = identity(each_recalibration(cfg)[0], method, data_kwargs)
    rid = _named(rid, cfg, train_size)
    predictions, predict_s = {}, {}
    for split in dataset.test_splits:
        t0 = time.perf_counter()
        predictions[split] = method.predict_distribution(dataset.splits[split], cfg.n_samples)
        predict_s[split] = time.perf_counter() - t0
        note("predicted %s (%d structures) in %.1f s", split, len(dataset.splits[split]),
             predict_s[split])

    facts = {"name": name, "dataset": dataset, "data_s": data_s, "fit_s": fit_s,
             "predict_s": predict_s, "train_size": train_size}
    if not cfg.recalibrate:
        return _write_record(cfg, method, rid, config, predictions, facts)
    # The same fit gives the raw record (the configuration without recalibration, so a
    # plain run of it is not repeated) and one recalibrated record per kind.
    from dataclasses import replace as replaced

    from uqbench import recalibration

    raw_cfg = replaced(cfg, recalibrate=None)
    raw_rid, raw_config = identity(raw_cfg, method, data_kwargs)
    raw_rid = _named(raw_rid, cfg, train_size)
    _write_record(raw_cfg, method, raw_rid, raw_config, predictions, facts)
    cal = dataset.splits["calibration"]
    cal_pred = method.predict_distribution(cal, cfg.n_samples)
    for kind_cfg in each_recalibration(cfg):
        kind = kind_cfg.recalibrate
        kind_rid, kind_config = identity(kind_cfg, method, data_kwargs)
        fitted = recalibration.fit(kind, cal_pred, cal)
        note("recalibration (%s) on the calibration split: %s", kind,
             recalibration.describe(kind, fitted))
        adjusted = {s: recalibration.apply_kind(kind, p, fitted)
                    for s, p in predictions.items()}
        key = "level_maps" if kind == "isotonic" else "factors"
        extra = {"recalibration": {"method": kind, key: fitted,
                                   "fitted_on": "calibration", "raw_record": raw_rid}}
        written = _write_record(kind_cfg, method, _named(kind_rid, cfg, train_size),
                                kind_config, adjusted, facts, extra)
    return written


def run_stacked(cfgs: list[RunConfig | RunPlan]) -> list[tuple[Path, dict]]:
    """Several seeds of one configuration (same method, dataset, size and settings), every
    model of every seed trained as one stacked computation
    (`uqbench.strategies.base.TorchUQMethod.fit_many`); each seed keeps its own data,
    initialisation, batch order, record and id. Where the method cannot stack, each seed
    runs as `run` would. Progress goes to the first seed's ``<record>.log``."""
    import torch

    from uqbench.strategies.base import TorchUQMethod

    plans = [plan(cfg) for cfg in cfgs]
    cfgs = [p.cfg for p in plans]
    prepared = [(p.method, p.data_kwargs) for p in plans]
    methods = [method for method, _ in prepared]
    if len(cfgs) < 2 or not all(isinstance(m, TorchUQMethod) and m.stack_members
                                for m in methods):
        return [run(p) for p in plans]
    first = cfgs[0]
    name = registry.dataset_name(first.dataset)
    rid, _ = identity(each_recalibration(first)[0], methods[0], prepared[0][1])
    log = log_to_file(record_path(first.out, name, first.method, rid).with_suffix(".log"))
    with log:
        torch.set_num_threads(first.threads)
        loaded = []
        for cfg, (_, data_kwargs) in zip(cfgs, prepared, strict=True):
            _seed_everything(cfg.seed)
            loaded.append(load_run_dataset(cfg, data_kwargs, methods[0]))
        note("run: %s on %s, seeds %s stacked, %d thread(s)", first.method, name,
             ", ".join(str(c.seed) for c in cfgs), first.threads)
        t0 = time.perf_counter()
        stacked = TorchUQMethod.fit_many(
            methods, [d.splits["train"] for d, _ in loaded],
            [d.splits.get("val") for d, _ in loaded],
            [d.splits.get("calibration") for d, _ in loaded])
        wall = time.perf_counter() - t0
        if not stacked:
            return [run(p) for p in plans]
        note("fit of %d seeds done in %.1f s", len(cfgs), wall)
        out = []
        for cfg, method, (_, data_kwargs), (dataset, data_s) in zip(
                cfgs, methods, prepared, loaded, strict=True):
            _seed_everything(cfg.seed)
            out.append(_finish(cfg, method, data_kwargs, dataset, data_s,
                               method.fit_seconds_))
    return out


def _write_record(cfg: RunConfig, method, rid: str, config: dict, predictions: dict,
                  facts: dict, extra: dict | None = None) -> tuple[Path, dict]:
    """Score ``predictions`` and write the run's record."""
    from uqbench import collapse
    from uqbench.scoring import group_scores, score, tail_summary, variance_parts

    dataset, name, predict_s = facts["dataset"], facts["name"], facts["predict_s"]
    specs = metric_specs()
    errors: dict[str, str] = {}
    metrics, curves = score(predictions, dataset.splits, specs, errors=errors)
    for key, message in errors.items():
        note("metric %s failed (NaN in the record): %s", key, message)
    reference = collapse.constant_reference(
        dataset.splits["train"], {s: dataset.splits[s] for s in predictions})
    n_predicted = sum(len(dataset.splits[s]) for s in predictions)
    params = method.get_params()
    prov = provenance(cfg.threads)
    record = {
        "schema_version": SCHEMA_VERSION,
        "run_id": rid,
        "method": {"key": cfg.method, "class": type(method).__name__, "hyperparameters": params},
        "dataset": {"key": name, "source": cfg.dataset, "options": dataset.options,
                    "sizes": dataset.sizes(), "labels": {
                        split: label_counts(frames) for split, frames in dataset.splits.items()}},
        "config": config,
        "train_size": facts["train_size"],
        "seed": cfg.seed,
        "quick": cfg.quick,
        "device": str(getattr(method, "device_", cfg.device)),
        "n_parameters": method.n_parameters,
        "n_samples": next(iter(predictions.values())).n_samples,
        "timings": {"data_s": facts["data_s"], "fit_s": facts["fit_s"], "predict_s": predict_s,
                    "predict_s_per_structure": sum(predict_s.values()) / max(n_predicted, 1)},
        "budget": getattr(method, "budget_", None),
        "fitted": method.fitted_info() if hasattr(method, "fitted_info") else {},
        "metrics": metrics,
        "metric_info": {spec.key: spec_info(spec) for spec in specs},
        "metric_errors": errors,
        "reference": {"constant": reference},
        "collapse": collapse.verdict(metrics, reference),
        "tails": tail_summary(predictions, dataset.splits),
        "groups": group_scores(predictions, dataset.splits),
        "variance_parts": variance_parts(predictions, dataset.splits),
        "curves": curves,
        "provenance": prov,
        "threads": cfg.threads,
        "commit": prov["commit"],
        "dirty": prov["dirty"],
        **(extra or {}),
    }
    path = record_path(cfg.out, name, cfg.method, rid)
    write_json_atomic(path, record)
    note("record written: %s", path)
    return path, record
