"""Does every method learn at every budget a user would try? Each EGNN method on nbody at
200 training structures, its card's defaults but for ``max_steps``, seed 0, one thread:
test force and energy RMSE over the constant predictor's (the collapse gate's ratios; a
run is collapsed at forces >= 0.9 or energy >= 1.0).

Usage: python benchmarks/budget_table.py [--budgets 100 280 1000 2000] [METHOD ...]
Writes budget_table.json beside this script after every run (a killed run keeps what it
finished; a rerun skips what is there) and prints the table as Markdown.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from uqbench import registry
from uqbench.cards import read_card
from uqbench.runner import RunConfig, run

OUT = Path(__file__).with_suffix(".json")
#: Smaller test and OOD splits than the default (500 each): prediction would otherwise cost
#: more than the fits; the ratios need no more.
DATA = {"test_size": 200, "ood_size": 200}


def egnn_methods() -> list[str]:
    keys = []
    for key, entry in registry.entries("method").items():
        card = getattr(entry.obj, "card", None)
        if card is not None and read_card(card)["backbone"] == "egnn":
            keys.append(key)
    return sorted(keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=int, nargs="+", default=[100, 280, 1000, 2000])
    parser.add_argument("methods", nargs="*")
    args = parser.parse_args()
    methods = args.methods or egnn_methods()
    table = json.loads(OUT.read_text()) if OUT.exists() else {"runs": {}}
    table.update(dataset="nbody", train_size=200, seed=0, threads=1, data=DATA)
    with tempfile.TemporaryDirectory() as out:
        for steps in args.budgets:
            for method in methods:
                key = f"{method}@{steps}"
                if key in table["runs"]:
                    continue
                _, record = run(RunConfig(method=method, dataset="nbody", train_size=200,
                                          seed=0, params={"max_steps": steps},
                                          dataset_options=DATA, out=Path(out)))
                table["runs"][key] = {
                    "method": method, "max_steps": steps,
                    "steps_per_model": record["budget"]["steps_per_model"],
                    "force_ratio": record["collapse"]["rmse_ratio"].get("forces"),
                    "energy_ratio": record["collapse"]["rmse_ratio"].get("energy"),
                    "collapsed": record["collapse"]["collapsed"],
                    "fit_s": round(record["timings"]["fit_s"], 1),
                    "commit": record["commit"], "dirty": record["dirty"]}
                OUT.write_text(json.dumps(table, indent=2) + "\n")
    print(markdown(table))


def markdown(table: dict) -> str:
    runs = table["runs"].values()
    budgets = sorted({r["max_steps"] for r in runs})
    lines = ["| method | " + " | ".join(f"{b} steps: forces / energy" for b in budgets) + " |",
             "|---|" + "---|" * len(budgets)]
    for method in sorted({r["method"] for r in runs}):
        cells = []
        for b in budgets:
            r = table["runs"].get(f"{method}@{b}")
            cells.append("" if r is None else f"{r['force_ratio']:.2f} / "
                         f"{r['energy_ratio']:.2f}{' **collapsed**' if r['collapsed'] else ''}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
