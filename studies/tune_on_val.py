"""Choose one open hyperparameter of a method on nbody's validation split, at the nbody
study's settings and budget (studies/nbody.yaml: 100 structures, 2000 optimiser steps,
seed 0), as studies/PROTOCOL.md asks for choices a method's description leaves open.

Usage:
    python studies/tune_on_val.py blip-egnn kl_weight 1 0.1 0.01 0.001 0.0001
    python studies/tune_on_val.py p-egnn crps_alpha 1 0.95 0.8

Fits the method once per value (one process per fit, one torch thread each), scores the
validation split, and writes studies/tune-<method>-<param>.json: per value the
validation CRPS, NLL, 95 % coverage and RMSE (energy per atom, force components) and the
collapse verdict on val. The choice is the lowest validation force CRPS among values that
do not collapse (forces: what a potential is for; energies are reported beside it).
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import yaml

STUDY = Path(__file__).with_name("nbody.yaml")
TRAIN_SIZE = 100


def study_params(method: str) -> dict:
    """The nbody study's parameters for ``method`` at 100 structures (its rules, in order)."""
    spec = yaml.safe_load(STUDY.read_text())
    params: dict = {}
    facts = {"method": method, "dataset": "nbody", "train_size": TRAIN_SIZE, "seed": 0}
    for rule in spec.get("params") or []:
        if all(facts.get(k) == v for k, v in (rule.get("when") or {}).items()):
            params.update(rule["set"])
    return params


def fit_and_score(value: float, method_key: str, param: str) -> dict:
    import torch

    import uqbench
    from uqbench import collapse
    from uqbench.metrics import BUILTIN
    from uqbench.scoring import score

    torch.set_num_threads(1)
    torch.manual_seed(0)
    data = uqbench.load_dataset("nbody", train_size=TRAIN_SIZE)
    params = {**study_params(method_key), param: value, "device": "cpu", "seed": 0}
    method = uqbench.create_method(method_key, **params)
    method.fit(data.splits["train"], data.splits["val"])
    pred = method.predict_distribution(data.splits["val"])
    res = score({"val": pred}, {"val": data.splits["val"]}, list(BUILTIN))[0]
    ref = collapse.constant_reference(data.splits["train"], {"val": data.splits["val"]})
    gate = collapse.verdict(res, ref, id_split="val")
    return {"value": value, "rmse_ratio": gate["rmse_ratio"], "collapsed": gate["collapsed"],
            **{t: {m: res["val"][t][m] for m in ("crps", "nll", "coverage_95", "rmse")}
               for t in ("energy", "forces")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("method")
    parser.add_argument("param")
    parser.add_argument("values", nargs="+", type=float)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    with ProcessPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(partial(fit_and_score, method_key=args.method, param=args.param),
                             args.values))
    ok = [r for r in rows if not r["collapsed"]]
    choice = min(ok, key=lambda r: r["forces"]["crps"])["value"] if ok else None
    out = {"method": args.method, "param": args.param, "train_size": TRAIN_SIZE,
           "split": "val", "settings": study_params(args.method), "rows": rows,
           "choice": choice,
           "command": f"python studies/tune_on_val.py {args.method} {args.param} "
                      + " ".join(f"{v:g}" for v in args.values)}
    path = Path(__file__).with_name(f"tune-{args.method}-{args.param}.json")
    path.write_text(json.dumps(out, indent=2) + "\n")
    for r in rows:
        print(f"{args.param}={r['value']:g} collapsed={r['collapsed']} "
              f"energy crps={r['energy']['crps']:.4g} forces crps={r['forces']['crps']:.4g} "
              f"forces rmse={r['forces']['rmse']:.4g}")
    print(f"choice: {choice} -> {path}")


if __name__ == "__main__":
    main()
