"""Wall time of `uqbench run --quick` per method on nbody, as a user runs it.

Usage: python benchmarks/quick_runs.py [METHOD ...]
Runs each method once in a fresh process (cold start included, data cache warm after the
first) and writes quick_runs.json beside this script. Goal: <= 60 s each on 2 cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT = ["ensemble-egnn", "mcdropout-egnn"]


def main() -> None:
    methods = sys.argv[1:] or DEFAULT
    results = {}
    with tempfile.TemporaryDirectory() as out:
        env = {**os.environ, "TQDM_DISABLE": "1"}
        subprocess.run(["uqbench", "run", "-m", methods[0], "-d", "nbody", "--quick",
                        "--out", out], check=True, env=env, capture_output=True)  # warm cache
        for method in methods:
            t0 = time.perf_counter()
            subprocess.run(["uqbench", "run", "-m", method, "-d", "nbody", "--quick",
                            "--out", out], check=True, env=env, capture_output=True)
            results[method] = round(time.perf_counter() - t0, 2)
    payload = {"wall_s": results, "cpu_count": os.cpu_count(), "goal_s": 60}
    print(json.dumps(payload, indent=2))
    Path(__file__).with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
