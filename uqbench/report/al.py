"""Active-learning records as learning curves, and the label-saving verdict.

The verdict per method and acquisition, paired by seed with the random-acquisition run of
the same method: the labels it needed to reach random selection's final test force RMSE,
as a saving ``1 - needed / random's labels`` (interpolated linearly between rounds; NaN
where it never got there), with the 95 % Student-t interval over seeds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from uqbench.report.compare import t_interval, verdict


def learning_curves(folder: Path) -> pd.DataFrame:
    """One row per round record under ``folder`` (``uqbench al`` output): dataset, method,
    acquisition, seed, round, n_labelled and every split x target x metric value."""
    rows = []
    for path in sorted(Path(folder).rglob("round-*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("schema") != "uqbench-al-round/1":
            continue
        cfg = record["config"]
        base = {"dataset": record["identity"]["dataset_name"], "method": cfg["method"],
                "acquisition": cfg["acquisition"], "seed": cfg["seed"],
                "round": record["round"], "n_labelled": record["n_labelled"]}
        for split, targets in record["scores"].items():
            for target, metrics in targets.items():
                for metric, value in metrics.items():
                    if isinstance(value, (int, float)):
                        rows.append({**base, "split": split, "target": target,
                                     "metric": metric, "value": float(value)})
    return pd.DataFrame(rows)


def labels_to_reach(n_labelled: np.ndarray, error: np.ndarray, goal: float) -> float:
    """The labels at which a learning curve first reaches ``goal`` (linear between
    rounds); NaN where it never does."""
    n_labelled, error = np.asarray(n_labelled, float), np.asarray(error, float)
    order = np.argsort(n_labelled)
    n_labelled, error = n_labelled[order], error[order]
    for i, value in enumerate(error):
        if value <= goal:
            if i == 0:
                return float(n_labelled[0])
            x0, x1, y0, y1 = n_labelled[i - 1], n_labelled[i], error[i - 1], error[i]
            return float(x0 + (y0 - goal) / (y0 - y1) * (x1 - x0))
    return float("nan")


def label_saving(curves: pd.DataFrame, split: str = "test", target: str = "forces",
                 metric: str = "rmse") -> pd.DataFrame:
    """Per method and acquisition (random excluded): the mean saving over seeds, its
    interval, n and verdict against the same method's random acquisition."""
    part = curves[(curves.split == split) & (curves.target == target)
                  & (curves.metric == metric)]
    rows = []
    for (dataset, method), group in part.groupby(["dataset", "method"]):
        chance = group[group.acquisition == "random"]
        for acquisition, runs in group[group.acquisition != "random"].groupby("acquisition"):
            savings = []
            for seed, run in runs.groupby("seed"):
                base = chance[chance.seed == seed]
                if base.empty:
                    continue
                last = base.sort_values("n_labelled").iloc[-1]
                needed = labels_to_reach(run.n_labelled, run.value, last.value)
                savings.append(100 * (1 - needed / last.n_labelled))
            values = pd.Series(savings, dtype=float)
            low, high = t_interval(values) if len(values) >= 2 else (np.nan, np.nan)
            rows.append({"dataset": dataset, "method": method, "acquisition": acquisition,
                         "n_seeds": len(values), "saving_pct_mean": values.mean(),
                         "saving_pct_ci_low": low, "saving_pct_ci_high": high,
                         "verdict": verdict(low, high) if len(values) >= 2 else "too few"})
    return pd.DataFrame(rows)
