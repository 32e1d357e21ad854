"""A content-addressed cache for generated and fetched data (extxyz files)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import ase.io
from ase import Atoms
from platformdirs import user_cache_dir

from uqbench.dataset import normalise_labels


def cache_dir() -> Path:
    """``$UQBENCH_CACHE`` if set, else the user's cache directory (e.g. ~/.cache/uqbench)."""
    return Path(os.environ.get("UQBENCH_CACHE") or user_cache_dir("uqbench"))


def content_hash(payload: dict) -> str:
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_splits(path: Path, splits: dict[str, list[Atoms]]) -> None:
    """All splits in one extxyz file (``info["split"]``), written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    frames = []
    for name, structures in splits.items():
        for atoms in structures:
            a = atoms.copy()
            a.info["split"] = name
            frames.append(a)
    ase.io.write(tmp, frames, format="extxyz")
    os.replace(tmp, path)


def read_splits(path: Path) -> dict[str, list[Atoms]]:
    splits: dict[str, list[Atoms]] = {}
    for atoms in ase.io.read(path, index=":", format="extxyz"):
        atoms = normalise_labels(atoms)
        splits.setdefault(atoms.info.pop("split"), []).append(atoms)
    return splits
