"""Choose BLIP's KL weight (posterior temperature) on nbody's validation split, at the
nbody study's settings and budget (studies/nbody.yaml, 100 structures, seed 0).

Usage: python studies/blip_kl_weight.py [--jobs 2]
Fits blip-egnn once per KL weight (one process per fit, one torch thread each), scores the
validation split, and writes studies/blip_kl_weight.json: per weight the validation CRPS,
NLL, 95 % coverage and RMSE (energy per atom, force components) and the collapse ratio.
The choice is the lowest validation force CRPS among weights that do not collapse.
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

WEIGHTS = (1.0, 0.1, 0.01, 0.001)
SETTINGS = dict(backbone_options={"hidden": 32, "n_layers": 3}, batch_size=32, lr=1e-3,
                max_steps=2000, patience=1_000_000, warm_start_fraction=0.5, device="cpu",
                seed=0)


def fit_and_score(kl_weight: float) -> dict:
    import torch

    import uqbench
    from uqbench import collapse
    from uqbench.metrics import BUILTIN
    from uqbench.scoring import score

    torch.set_num_threads(1)
    torch.manual_seed(0)
    data = uqbench.load_dataset("nbody", train_size=100)
    method = uqbench.create_method("blip-egnn", kl_weight=kl_weight, **SETTINGS)
    method.fit(data.splits["train"], data.splits["val"])
    pred = method.predict_distribution(data.splits["val"])
    res = score({"val": pred}, {"val": data.splits["val"]}, list(BUILTIN))[0]
    ref = collapse.constant_reference(data.splits["train"], {"val": data.splits["val"]})
    gate = collapse.verdict(res, ref, id_split="val")
    return {"kl_weight": kl_weight, "collapse": gate["rmse_ratio"],
            "collapsed": gate["collapsed"],
            **{t: {m: res["val"][t][m] for m in ("crps", "nll", "coverage_95", "rmse")}
               for t in ("energy", "forces")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    with ProcessPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(fit_and_score, WEIGHTS))
    ok = [r for r in rows if not r["collapsed"]]
    choice = min(ok, key=lambda r: r["forces"]["crps"])["kl_weight"] if ok else None
    out = {"settings": SETTINGS, "train_size": 100, "split": "val", "rows": rows,
           "choice": choice}
    path = Path(__file__).with_suffix(".json")
    path.write_text(json.dumps(out, indent=2) + "\n")
    for r in rows:
        print(f"kl_weight={r['kl_weight']:g} collapsed={r['collapsed']} "
              f"energy crps={r['energy']['crps']:.4g} forces crps={r['forces']['crps']:.4g} "
              f"rmse={r['forces']['rmse']:.4g}")
    print(f"choice: {choice}")


if __name__ == "__main__":
    main()
