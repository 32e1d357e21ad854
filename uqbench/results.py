"""Result records: one JSON file per run, written atomically, with provenance."""

from __future__ import annotations

import functools
import json
import math
import os
import platform
import re
import subprocess
import tempfile
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from uqbench.cache import content_hash
from uqbench.errors import UQBenchError

SCHEMA_VERSION = 1
#: The record schema versions this code reads.
KNOWN_SCHEMA_VERSIONS = (1,)
#: A record is a few hundred kB (its curves included); larger files are refused unread.
MAX_RECORD_BYTES = 32 * 2**20
#: Record entries that count rather than score: whole numbers >= 0.
COUNTS = ("n_structures", "n_targets", "n_nonfinite", "n_zero_std")
REQUIRED_KEYS = ("schema_version", "run_id", "method", "dataset", "train_size", "seed",
                 "metrics", "timings", "provenance")


def run_id(config: dict[str, Any]) -> str:
    """A stable name for a run configuration: ``n<train>-seed<seed>-<hash>``.

    Hyperparameters are hashed as given; a default changed in code makes a new id."""
    return f"n{config['train_size']}-seed{config['seed']}-{content_hash(config)[:10]}"


def record_path(out_dir: Path, dataset: str, method: str, rid: str) -> Path:
    return Path(out_dir) / _safe(dataset) / _safe(method) / f"{rid}.json"


_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,159}")


def plain_name(value: Any, what: str) -> str:
    """``value`` if it is a plain file name (letters, digits, ``._+-``, not starting with a
    dot, no ``..``), else ValueError: names read from records and specs build paths, and
    a shared record must not write outside the output directory."""
    if not isinstance(value, str) or not _PLAIN_NAME.fullmatch(value) or ".." in value:
        raise ValueError(f"{what} {value!r} is not a plain name (letters, digits and ._+- "
                         "only, no '..')")
    return value


def output_path(out_dir: Path, name: str) -> Path:
    """``out_dir / name`` for a file named from data (a dataset key, a figure name):
    ``name`` must be a plain file name, so the path stays inside ``out_dir``."""
    return Path(out_dir) / plain_name(name, "output file name")


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


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename, so a reader never
    sees half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_record(path: Path) -> dict:
    """A record as data, validated (ValueError naming the file and the first fault if not).

    Records are shared, so they are untrusted input: a regular file of at most
    `MAX_RECORD_BYTES`, a JSON object of a known ``schema_version`` with every required
    key; method, dataset and run id plain names (they build paths); ``train_size`` a whole
    number >= 1 and ``seed`` >= 0; ``metrics`` as split -> target -> metric -> number,
    each inside its metric's bounds (`uqbench.metrics.table.MetricSpec.bounds`; NaN and
    the infinities allowed where the bounds allow them); ``timings`` numbers >= 0."""
    path = Path(path)
    if not path.is_file():  # a FIFO or a device (a link to /dev/zero) is never read
        raise ValueError(f"{path}: not a uqbench record (not a regular file)")
    size = path.stat().st_size
    if size > MAX_RECORD_BYTES:
        raise ValueError(f"{path}: not a uqbench record ({size} bytes; records are at most "
                         f"{MAX_RECORD_BYTES})")
    try:
        with open(path, "rb") as fh:  # read no more than the limit, whatever stat said
            record = json.loads(fh.read(MAX_RECORD_BYTES + 1).decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not a uqbench record (not UTF-8 text: {exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not a uqbench record (not JSON: {exc.msg}, line "
                         f"{exc.lineno})") from None
    try:
        validate_record(record)
    except ValueError as exc:
        raise ValueError(f"{path}: not a valid uqbench record ({exc})") from None
    for key in ("metrics", "curves"):
        if key in record:
            record[key] = restore_floats(record[key])
    return record


def validate_record(record: Any) -> None:
    """ValueError naming the first way ``record`` is not a valid record (see `read_record`)."""
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    version_ = record["schema_version"]
    if isinstance(version_, bool) or version_ not in KNOWN_SCHEMA_VERSIONS:
        raise ValueError(f"schema_version {version_!r} is not one this uqbench reads "
                         f"({', '.join(map(str, KNOWN_SCHEMA_VERSIONS))})")
    for key in ("method", "dataset"):
        if not isinstance(record[key], dict) or "key" not in record[key]:
            raise ValueError(f"{key} must hold a key")
        plain_name(record[key]["key"], f"{key} key")
    plain_name(record["run_id"], "run_id")
    for key, low in (("train_size", 1), ("seed", 0)):
        value = record[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{key} must be a whole number >= {low}; got {value!r}")
    if "quick" in record and not isinstance(record["quick"], bool):
        raise ValueError(f"quick must be true or false; got {record['quick']!r}")
    if not isinstance(record["timings"], dict):
        raise ValueError("timings must be an object")
    _check_timings(record["timings"], "timings")
    metrics = record["metrics"]
    if not (isinstance(metrics, dict) and all(
            isinstance(t, dict) and all(isinstance(m, dict) for m in t.values())
            for t in metrics.values())):
        raise ValueError("metrics must map split -> target -> metric -> value")
    bounds = _metric_bounds()
    for split, targets in metrics.items():
        for target, values in targets.items():
            for metric, value in values.items():
                where = f"metrics.{split}.{target}.{metric}"
                number = _number(value)
                if number is None:
                    raise ValueError(f"{where} must be a number; got {value!r}")
                if math.isnan(number):  # a metric that could not be computed
                    continue
                if metric in COUNTS:
                    if not (number >= 0 and float(number).is_integer()):
                        raise ValueError(f"{where} counts: a whole number >= 0; got {value!r}")
                    continue
                low, high = bounds.get(metric, (None, None))
                if (low is not None and number < low) or (high is not None and number > high):
                    raise ValueError(f"{where} = {value!r} lies outside [{low}, {high}]")


def _check_timings(timings: dict, where: str) -> None:
    """Seconds are numbers >= 0 (or null), also in nested objects (per split)."""
    for key, value in timings.items():
        if isinstance(value, dict):
            _check_timings(value, f"{where}.{key}")
        elif value is not None and not (_number(value) is not None and _number(value) >= 0):
            raise ValueError(f"{where}.{key} must be a number >= 0; got {value!r}")


def _number(value: Any) -> float | None:
    """A JSON number or one of `json_safe`'s strings for the non-finite ones, as a float;
    None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value in _SPECIAL:
        return _SPECIAL[value]
    return None


def _metric_bounds() -> dict[str, tuple[float | None, float | None]]:
    """Each registered metric's bounds (plugins' included, where they declare them)."""
    from uqbench.metrics.table import metric_info

    return {key: tuple(info.get("bounds") or (None, None))
            for key, info in metric_info().items()}


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
