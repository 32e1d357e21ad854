"""Adopt recalibrated records from a re-fit into the published records, after checking that
the re-fit reproduced the published raw record.

    python studies/adopt_recalibrated.py SCRATCH RECORDS

For every recalibrated record under SCRATCH, its raw record (``recalibration.raw_record``)
must exist both under SCRATCH (the re-fit) and under RECORDS (published), and every
published metric value must be in the re-fit's, equal. Then the recalibrated record and its log are
copied into RECORDS (never over an existing file); otherwise it is reported and skipped.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path


def flat(tree, prefix=()):
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from flat(value, (*prefix, key))
    else:
        yield prefix, tree


def same(fresh: dict, published: dict) -> bool:
    """Every published metric value is in the re-fit, equal (the re-fit may have more: a
    plugin metric installed since)."""
    fa, fb = dict(flat(fresh)), dict(flat(published))
    return fb.keys() <= fa.keys() and all(
        fa[k] == fb[k] or (fa[k] != fa[k] and fb[k] != fb[k]) for k in fb)  # NaN == NaN


def main(scratch: Path, records: Path) -> int:
    adopted = refused = 0
    for path in sorted(scratch.rglob("*.json")):
        record = json.loads(path.read_text())
        info = record.get("recalibration")
        if not info:
            continue
        rel = path.relative_to(scratch)
        raw_name = info["raw_record"] + ".json"
        fresh, published = path.with_name(raw_name), (records / rel).with_name(raw_name)
        if not (fresh.exists() and published.exists()):
            print(f"skip {rel}: raw record {raw_name} missing in "
                  f"{'the re-fit' if not fresh.exists() else 'the published records'}")
            refused += 1
            continue
        a = json.loads(fresh.read_text())["metrics"]
        b = json.loads(published.read_text())["metrics"]
        if not same(a, b):
            print(f"skip {rel}: the re-fit's raw metrics differ from the published ones")
            refused += 1
            continue
        target = records / rel
        if target.exists():
            continue
        shutil.copy2(path, target)
        log = path.with_suffix(".log")
        if log.exists() and not target.with_suffix(".log").exists():
            shutil.copy2(log, target.with_suffix(".log"))
        adopted += 1
        print(f"adopted {rel} (raw {raw_name} reproduced)")
    print(f"{adopted} adopted, {refused} refused")
    return 0 if refused == 0 else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
