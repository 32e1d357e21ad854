"""Pool-based active learning: does a method's uncertainty pick better structures to label
than chance?

A run starts from ``n_initial`` labelled structures drawn at random from the training pool,
then repeats: fit the method afresh on the labelled set (its card's budget, the same steps
every round and for every method), score every test and OOD split, and, unless it was the
last round, label the ``batch`` unlabelled pool structures the acquisition ranks highest.
The pool's labels exist already (the loader made them), so the oracle is exact and free.

Each round writes one JSON record (its labelled set's pool indices, the batch it chose,
the scores, the fit's steps and time); a run killed mid-way resumes at its last finished
round, because round r's record holds everything round r + 1 needs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from uqbench.errors import UQBenchError
from uqbench.prediction import Prediction
from uqbench.progress import note

#: What ranks the unlabelled pool: the largest per-atom force std of a structure (√ of the
#: summed component variances), its total-energy std, or nothing (uniform at random).
ACQUISITIONS = ("force_std", "energy_std", "random")
SCHEMA = "uqbench-al-round/1"
#: Metrics kept per round: the learning curves need errors and scores, not figures' curves.
ROUND_METRICS = ("rmse", "mae", "crps", "nll", "spearman", "coverage_95")


def acquisition_scores(prediction: Prediction, kind: str) -> np.ndarray | None:
    """One score per structure (higher: label first); None for ``random``."""
    if kind == "random":
        return None
    if kind == "energy_std":
        return np.asarray(prediction.energy_std, dtype=float)
    if kind == "force_std":
        per_atom = np.sqrt((np.asarray(prediction.forces_std, dtype=float) ** 2).sum(axis=1))
        starts = np.concatenate([[0], np.cumsum(prediction.n_atoms)[:-1]])
        return np.maximum.reduceat(per_atom, starts)
    raise ValueError(f"unknown acquisition {kind!r}; one of {', '.join(ACQUISITIONS)}")


def select(scores: np.ndarray | None, k: int, rng: np.random.Generator,
           n: int | None = None) -> np.ndarray:
    """Positions of the ``k`` highest ``scores``, ties broken at random (so a constant
    score selects exactly as ``random`` does with the same generator)."""
    size = len(scores) if scores is not None else int(n)
    order = rng.permutation(size)
    if scores is None:
        return order[:k]
    scores = np.nan_to_num(np.asarray(scores, dtype=float), nan=-np.inf)
    return order[np.argsort(-scores[order], kind="stable")[:k]]


def round_rng(seed: int, round_: int) -> np.random.Generator:
    """The generator of one round (resuming needs no saved generator state)."""
    return np.random.default_rng([seed, round_, 8675309])


def initial_labels(n_pool: int, n_initial: int, seed: int) -> list[int]:
    """The random starting set: the same for every method and acquisition at a seed."""
    if not 1 <= n_initial <= n_pool:
        raise UQBenchError(f"--initial must be between 1 and the pool's {n_pool} structures; "
                           f"got {n_initial}")
    rng = np.random.default_rng([seed, 4242])
    return sorted(int(i) for i in rng.choice(n_pool, n_initial, replace=False))


def run_loop(n_pool: int, n_initial: int, batch: int, rounds: int, seed: int,
             fit: Callable[[list[int]], Any], evaluate: Callable[[Any], dict],
             pool_scores: Callable[[Any, np.ndarray], np.ndarray | None],
             done: dict[int, dict] | None = None,
             on_round: Callable[[dict], None] | None = None) -> list[dict]:
    """The loop on any model: ``fit(labelled)`` returns a model, ``evaluate(model)`` its
    scores, ``pool_scores(model, unlabelled)`` one acquisition score per unlabelled pool
    index (None: random). ``done`` maps finished rounds to their results (resume). Returns
    one result per round: ``round``, ``labelled``, ``acquired``, ``scores``."""
    done = done or {}
    labelled = initial_labels(n_pool, n_initial, seed)
    results = []
    for r in range(rounds + 1):
        if r in done:
            result = done[r]
            if sorted(result["labelled"]) != labelled:
                raise UQBenchError(f"round {r}'s record holds another labelled set than "
                                   "its predecessors imply; remove the run's records")
        else:
            model = fit(labelled)
            result = {"round": r, "labelled": labelled, "scores": evaluate(model),
                      "acquired": []}
            if r < rounds:
                rest = np.setdiff1d(np.arange(n_pool), labelled)
                k = min(batch, len(rest))
                picked = rest[select(pool_scores(model, rest), k, round_rng(seed, r),
                                     len(rest))]
                result["acquired"] = sorted(int(i) for i in picked)
            if on_round is not None:
                on_round(result)
        results.append(result)
        labelled = sorted(labelled + list(result["acquired"]))
    return results


@dataclass(frozen=True)
class ALConfig:
    """One active-learning run: the method and data as for `uqbench run`, and the loop."""

    method: str
    dataset: str
    acquisition: str = "force_std"
    n_initial: int = 50  # the loop's defaults: DEFAULT_LOOP
    batch: int = 50
    rounds: int = 5
    pool_size: int | None = None  # the training pool (the loader's train_size)
    seed: int = 0
    quick: bool = False
    params: dict[str, Any] = field(default_factory=dict)
    dataset_options: dict[str, Any] = field(default_factory=dict)
    out: Path = Path("results")
    threads: int = 1
    device: str = "auto"


#: ``--quick``: a small start and three rounds, about a minute on a laptop core.
QUICK_LOOP = {"n_initial": 16, "batch": 16, "rounds": 3}
#: The loop without ``--quick``: ALConfig's own defaults.
DEFAULT_LOOP = {k: ALConfig.__dataclass_fields__[k].default
                for k in ("n_initial", "batch", "rounds")}


def run_directory(cfg: ALConfig, identity: dict) -> Path:
    from uqbench.results import content_hash, plain_name

    name = plain_name(identity["dataset_name"], "dataset name")
    return (Path(cfg.out) / "al" / name / plain_name(cfg.method, "method")
            / plain_name(cfg.acquisition, "acquisition")
            / f"seed{cfg.seed}-{content_hash(identity)[:10]}")


def run_al(cfg: ALConfig) -> list[Path]:
    """Run (or resume) one active-learning run; returns the round records' paths."""
    import torch

    from uqbench import registry
    from uqbench.results import write_text_atomic
    from uqbench.runner import RunConfig, identity, load_run_dataset, metric_specs, prepare
    from uqbench.scoring import score

    if cfg.acquisition not in ACQUISITIONS:
        raise UQBenchError(f"--acquisition must be one of {', '.join(ACQUISITIONS)}; "
                           f"got {cfg.acquisition!r}")
    for key in ("n_initial", "batch", "rounds"):
        value = getattr(cfg, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < (key != "rounds"):
            raise UQBenchError(f"--{key.replace('n_', '')} must be a whole number "
                               f"{'>= 0' if key == 'rounds' else '>= 1'}; got {value!r}")
    if cfg.pool_size is not None and cfg.n_initial > cfg.pool_size:
        raise UQBenchError(f"--initial {cfg.n_initial} exceeds --pool-size {cfg.pool_size}")
    run_cfg = RunConfig(method=cfg.method, dataset=cfg.dataset, train_size=cfg.pool_size,
                        seed=cfg.seed, device=cfg.device, quick=cfg.quick, params=cfg.params,
                        dataset_options=cfg.dataset_options, out=cfg.out,
                        threads=cfg.threads)
    method, data_kwargs = prepare(run_cfg)
    _, config = identity(run_cfg, method, data_kwargs)
    ident = {"schema": SCHEMA, "run": config, "acquisition": cfg.acquisition,
             "n_initial": cfg.n_initial, "batch": cfg.batch,
             "dataset_name": registry.dataset_name(cfg.dataset)}
    folder = run_directory(cfg, ident)
    torch.set_num_threads(cfg.threads)
    dataset, _ = load_run_dataset(run_cfg, data_kwargs, method)
    pool, val = dataset.splits["train"], dataset.splits.get("val")
    if cfg.n_initial > len(pool):
        raise UQBenchError(f"--initial {cfg.n_initial} exceeds the pool's {len(pool)} "
                           "structures")
    specs = [s for s in metric_specs() if s.key in ROUND_METRICS]
    done = {}
    for path in sorted(folder.glob("round-*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("identity") == ident:
            done[int(record["round"])] = record
    if done:
        note("al: resuming %s after round %d", folder, max(done))
    paths = [folder / f"round-{r:03d}.json" for r in range(cfg.rounds + 1)]
    fit_s: dict[int, float] = {}

    def fit(labelled: list[int]):
        t0 = time.perf_counter()
        note("al: fitting %s on %d labelled structures", cfg.method, len(labelled))
        method.fit([pool[i] for i in labelled], val)
        fit_s[len(labelled)] = time.perf_counter() - t0
        return method

    def evaluate(model) -> dict:
        predictions = {s: model.predict_distribution(dataset.splits[s])
                       for s in dataset.test_splits}
        metrics, _ = score(predictions, dataset.splits, specs)
        return metrics

    def pool_scores(model, rest: np.ndarray) -> np.ndarray | None:
        if cfg.acquisition == "random":
            return None
        prediction = model.predict_distribution([pool[i] for i in rest])
        return acquisition_scores(prediction, cfg.acquisition)

    def write(result: dict) -> None:
        from uqbench.results import provenance

        prov = provenance(cfg.threads)
        record = {"schema": SCHEMA, "identity": ident, "config": asdict(
            replace(cfg, out=str(cfg.out))), **result,
            "n_labelled": len(result["labelled"]), "pool_size": len(pool),
            "fit_s": fit_s.get(len(result["labelled"])),
            "budget": getattr(method, "budget_", None),
            "commit": prov["commit"], "dirty": prov["dirty"]}
        path = paths[result["round"]]
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(record, indent=1, default=float) + "\n")
        test = result["scores"].get("test", {}).get("forces", {})
        note("al: round %d/%d: %d labelled, test force RMSE %.4g, CRPS %.4g -> %s",
             result["round"], cfg.rounds, len(result["labelled"]),
             test.get("rmse", float("nan")), test.get("crps", float("nan")), path)

    run_loop(len(pool), cfg.n_initial, cfg.batch, cfg.rounds, cfg.seed, fit, evaluate,
             pool_scores, done, write)
    return paths
