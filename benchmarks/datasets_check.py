"""`uqbench datasets check` on the BOTNet ethanol data (3 205 frames as a user's spec:
train with a val fraction, the MD test, methanol and H-removal splits), against the way
it searched molecules before: an ASE neighbour list per frame in the files' 50 Å box,
twice per frame (measured on 100 frames and scaled to the data set).

Usage: python benchmarks/datasets_check.py [DATA_DIR]   (default ../shared/data/botnet-ethanol)
Writes datasets_check.json beside this script.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from ase.neighborlist import neighbor_list

from uqbench.datasets.check import SEARCH, report
from uqbench.datasets.spec import load_spec


def main() -> None:
    here = Path(__file__).resolve().parent
    data = Path(sys.argv[1] if len(sys.argv) > 1 else
                here.parent.parent / "shared" / "data" / "botnet-ethanol").resolve()
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "ethanol.yaml"
        spec.write_text(f"name: ethanol\nsplits:\n  train: {data}/train.xyz\n  val: 0.1\n"
                        f"  test: {data}/test_MD.xyz\n  ood-meth: {data}/test_eth_meth.xyz\n"
                        f"  ood-h-removal: {data}/test_H_removal.xyz\n")
        t0 = time.perf_counter()
        dataset = load_spec(spec)
        read_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        _, problems = report(dataset)
        check_s = time.perf_counter() - t0
    frames = [a for split in dataset.splits.values() for a in split]
    t0 = time.perf_counter()
    for atoms in frames[:100]:
        neighbor_list("d", atoms, SEARCH)
    before_s = 2 * (time.perf_counter() - t0) * len(frames) / 100
    out = {"frames": len(frames), "read_s": round(read_s, 2), "check_s": round(check_s, 2),
           "before_neighbour_lists_s (estimated)": round(before_s, 1),
           "speed_up": round(before_s / check_s, 1), "goal_s": 60,
           "problems": problems}
    print(json.dumps(out, indent=2))
    (here / "datasets_check.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
