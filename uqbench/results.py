"""Result records: one JSON file per run, written atomically, with provenance."""

from __future__ import annotations

import functools
import json
import math
import os
import platform
import subprocess
import tempfile
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from uqbench.cache import content_hash
from uqbench.errors import UQBenchError

SCHEMA_VERSION = 1
REQUIRED_KEYS = ("schema_version", "run_id", "method", "dataset", "train_size", "seed",
                 "metrics", "timings", "provenance")


def run_id(config: dict[str, Any]) -> str:
    """A stable name for a run configuration: ``n<train>-seed<seed>-<hash>``.

    Hyperparameters are hashed as given; a default changed in code makes a new id."""
    return f"n{config['train_size']}-seed{config['seed']}-{content_hash(config)[:10]}"


def record_path(out_dir: Path, dataset: str, method: str, rid: str) -> Path:
    return Path(out_dir) / _safe(dataset) / _safe(method) / f"{rid}.json"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def check_writable(out_dir: Path) -> None:
    """Fail early (before any training) when results could not be written, creating
    nothing: the directory is made when the first record is written."""
    if str(out_dir) == "":
        raise UQBenchError("the output directory must not be empty (use . for here)")
    out_dir = Path(out_dir)
    probe = out_dir
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise UQBenchError(f"cannot write results to {str(out_dir)!r}: {str(probe)!r} is "
                           "not a directory")
    try:  # a real write in the nearest existing directory (permissions alone lie to root)
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".uqbench-probe-"):
            pass
    except OSError as exc:
        raise UQBenchError(f"cannot write results to {str(out_dir)!r}: {exc.strerror}") from None


def json_safe(obj: Any) -> Any:
    """Non-finite floats become the strings "NaN", "Infinity", "-Infinity" (strict JSON)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "NaN" if math.isnan(obj) else ("Infinity" if obj > 0 else "-Infinity")
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # NumPy scalars
        return json_safe(obj.item())
    return obj


def write_json_atomic(path: Path, payload: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(json_safe(payload), fh, indent=2, sort_keys=False, allow_nan=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; records are shared like other outputs
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_record(path: Path) -> dict:
    """A record as data, checked for the shape the leaderboard relies on (ValueError if not):
    a mapping with every required key, ``metrics`` as split -> target -> metric -> value."""
    try:
        record = json.loads(Path(path).read_text())
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not a uqbench record (not UTF-8 text: {exc.reason})") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path}: not a uqbench record (not a JSON object)")
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise ValueError(f"{path}: not a uqbench record (missing {', '.join(missing)})")
    metrics = record["metrics"]
    if not (isinstance(metrics, dict) and all(
            isinstance(t, dict) and all(isinstance(m, dict) for m in t.values())
            for t in metrics.values())):
        raise ValueError(f"{path}: not a uqbench record (metrics must map split -> target -> "
                         "metric -> value)")
    for key in ("method", "dataset"):
        if not isinstance(record[key], dict) or "key" not in record[key]:
            raise ValueError(f"{path}: not a uqbench record ({key} must hold a key)")
    for key in ("metrics", "curves"):
        if key in record:
            record[key] = restore_floats(record[key])
    return record


_SPECIAL = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def restore_floats(obj: Any) -> Any:
    """Undo `json_safe` for numbers: "NaN", "Infinity" and "-Infinity" become floats."""
    if isinstance(obj, str):
        return _SPECIAL.get(obj, obj)
    if isinstance(obj, dict):
        return {k: restore_floats(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [restore_floats(v) for v in obj]
    return obj


def provenance(threads: int | None = None) -> dict[str, Any]:
    """What a run's numbers depend on besides its configuration: package versions, the
    git commit and whether the tree differed from it, torch's thread count and its
    deterministic-algorithms setting."""
    versions = {}
    for pkg in ("uqbench", "torch", "numpy", "scipy", "ase", "pandas", "chgnet",
                "orb-models"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = None
    commit, dirty = git_state()
    out = {
        "versions": versions,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "git_commit": None if commit is None else commit + ("-dirty" if dirty else ""),
        "commit": commit,
        "dirty": dirty,
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    try:
        import torch

        out["threads"] = threads if threads is not None else torch.get_num_threads()
        out["deterministic"] = torch.are_deterministic_algorithms_enabled()
    except ImportError:
        out["threads"], out["deterministic"] = threads, None
    return out


@functools.cache
def git_state() -> tuple[str | None, bool | None]:
    """The commit of the source tree uqbench runs from and whether any tracked file differs
    from it (untracked files, such as records being written, do not count); (None, None)
    outside a git checkout. Read once per process, when this module is first imported (a
    sweep's workers import it as the sweep starts), so a commit or an edit made while a
    long study runs is not attributed to code already loaded."""
    src = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"],
                                capture_output=True, text=True, timeout=5,
                                check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(src), "status", "--porcelain",
                                 "--untracked-files=no"], capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        return commit, bool(status)
    except (OSError, subprocess.SubprocessError):
        return None, None


git_state()  # the state of the code this process loaded
