"""A content-addressed cache for generated data: lossless ``.npz`` files of labelled splits."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from ase import Atoms
from platformdirs import user_cache_dir


def cache_dir() -> Path:
    """``$UQBENCH_CACHE`` if set, else the user's cache directory (e.g. ~/.cache/uqbench)."""
    return Path(os.environ.get("UQBENCH_CACHE") or user_cache_dir("uqbench"))


def check_cache_dir() -> Path:
    """The cache directory, made if needed; one line (`UQBenchError`) where it cannot be
    (``UQBENCH_CACHE`` naming a file, an unwritable or impossible place), before any work."""
    from uqbench.errors import UQBenchError

    path = cache_dir()
    where = "UQBENCH_CACHE" if os.environ.get("UQBENCH_CACHE") else "the cache directory"
    try:
        path.mkdir(parents=True, exist_ok=True)
        with open(path / f".probe-{os.getpid()}", "w"):
            pass
        (path / f".probe-{os.getpid()}").unlink()
    except OSError as exc:
        raise UQBenchError(f"{where} {str(path)!r} is not a usable directory "
                           f"({exc.strerror or type(exc).__name__}); set UQBENCH_CACHE to a "
                           "writable directory") from None
    return path


def content_hash(payload: dict) -> str:
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


#: Per-frame labels the cache keeps: the generating trajectory (splits never share one),
#: the phase or family a frame belongs to, and its MD temperature.
INFO_KEYS = ("trajectory", "phase", "temperature")


def cached_splits(path: Path, use_cache: bool,
                  make: Callable[[], dict[str, list[Atoms]]]) -> dict[str, list[Atoms]]:
    """The splits stored at ``path``, or ``make()`` (then stored) when absent. A cached file
    that cannot be read back whole (truncated, empty, not an archive of splits) is said to
    be so in one line and made again."""
    if use_cache and path.exists():
        try:
            return read_splits(path)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            print(f"uqbench: note: cached data {path} is unreadable ({type(exc).__name__}); "
                  "generating it again", file=sys.stderr)
            path.unlink(missing_ok=True)
    splits = make()
    if use_cache:
        write_splits(path, splits)
    return splits


def write_splits(path: Path, splits: dict[str, list[Atoms]]) -> None:
    """All splits in one ``.npz`` (bit-exact, unlike text extxyz), written atomically."""
    names = list(splits)
    frames = [(i, a) for i, name in enumerate(names) for a in splits[name]]
    arrays = {
        "split_names": np.array(names),
        "split": np.array([i for i, _ in frames]),
        "n_atoms": np.array([len(a) for _, a in frames]),
        "numbers": np.concatenate([a.numbers for _, a in frames]),
        "positions": np.concatenate([a.positions for _, a in frames]),
        "charges": np.concatenate([a.get_initial_charges() for _, a in frames]),
        "forces": np.concatenate([a.arrays["forces"] for _, a in frames]),
        "energy": np.array([a.info["energy"] for _, a in frames]),
        "cell": np.array([np.asarray(a.cell) for _, a in frames]),
        "pbc": np.array([a.pbc for _, a in frames]),
    }
    for key in INFO_KEYS:  # descriptive labels, kept where every frame has one
        values = [a.info.get(key) for _, a in frames]
        if frames and all(isinstance(v, str | int | float) for v in values):
            arrays[f"info_{key}"] = np.array(values)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def read_splits(path: Path) -> dict[str, list[Atoms]]:
    with np.load(path, allow_pickle=False) as npz:
        data = {key: npz[key] for key in npz.files}  # each npz[key] reads the file again
    names = [str(n) for n in data["split_names"]]
    splits: dict[str, list[Atoms]] = {name: [] for name in names}
    ends = np.cumsum(data["n_atoms"])
    for k, (start, end) in enumerate(zip(ends - data["n_atoms"], ends, strict=True)):
        atoms = Atoms(numbers=data["numbers"][start:end], positions=data["positions"][start:end],
                      cell=data["cell"][k], pbc=data["pbc"][k])
        atoms.set_initial_charges(data["charges"][start:end])
        atoms.info["energy"] = float(data["energy"][k])
        for key in INFO_KEYS:
            if f"info_{key}" in data:
                atoms.info[key] = data[f"info_{key}"][k].item()
        atoms.arrays["forces"] = data["forces"][start:end].copy()
        splits[names[data["split"][k]]].append(atoms)
    return splits
