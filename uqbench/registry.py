"""Discovery of methods, datasets and metrics through Python entry points.

Built-ins register through the same groups as third-party plugins. Nothing here imports
torch: listing only loads the entry-point objects, and built-in entry points are light
factories that import their heavy modules when called.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from uqbench.errors import UQBenchError

GROUPS = {"method": "uqbench.methods", "dataset": "uqbench.datasets", "metric": "uqbench.metrics"}


@dataclass
class Entry:
    kind: str
    key: str
    target: str
    obj: Any = None
    error: str | None = None

    @property
    def summary(self) -> str:
        if self.error:
            return f"[failed to import: {self.error}]"
        text = getattr(self.obj, "summary", None) or (getattr(self.obj, "__doc__", None) or "")
        lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
        return lines[0] if lines else ""


def entries(kind: str) -> dict[str, Entry]:
    """Every registered entry of ``kind`` (method, dataset, metric), loaded; errors kept."""
    found: dict[str, Entry] = {}
    for ep in sorted(entry_points(group=GROUPS[kind]), key=lambda e: e.name):
        if ep.name in found:  # the first distribution wins; duplicates are ignored
            continue
        entry = Entry(kind, ep.name, ep.value)
        try:
            entry.obj = ep.load()
        except Exception as exc:  # a broken plugin must not break the others
            entry.error = f"{type(exc).__name__}: {exc}".splitlines()[0]
        found[ep.name] = entry
    return found


def get(kind: str, key: str) -> Any:
    """The loaded object registered as ``key``, or a clear error listing the valid keys."""
    found = entries(kind)
    if key not in found:
        valid = ", ".join(k for k, e in found.items() if e.error is None) or "(none)"
        raise UQBenchError(f"unknown {kind} {key!r}; valid {kind}s: {valid}")
    entry = found[key]
    if entry.error:
        raise UQBenchError(f"{kind} {key!r} ({entry.target}) failed to import: {entry.error}")
    return entry.obj


def create_method(key: str, **hyperparameters: Any):
    """An unfitted UQ method registered as ``key``, with the given hyperparameters."""
    factory = get("method", key)
    try:
        method = factory(**hyperparameters)
    except TypeError as exc:
        raise UQBenchError(f"method {key!r}: bad hyperparameters: {exc}") from None
    method.key = key
    return method


def _is_file_key(key: str) -> bool:
    return key.endswith((".xyz", ".extxyz", ".yaml", ".yml")) or "/" in key


def is_file_dataset(key: str) -> bool:
    """Whether ``key`` names a user's file (a spec or an extxyz file), not a registered
    dataset."""
    return _is_file_key(key) and key not in entries("dataset")


def dataset_loader(key: str):
    """The loader of a registered dataset, of a dataset spec file (``.yaml``) or of an
    extxyz file, named by its path."""
    if is_file_dataset(key):
        from uqbench.datasets.spec import is_spec, load_spec

        if is_spec(key):
            return functools.partial(load_spec, key)
        from uqbench.datasets.extxyz import load_extxyz

        return functools.partial(load_extxyz, key)
    return get("dataset", key)


def dataset_name(key: str) -> str:
    """The name results are filed under: a registered key as it is, a spec file's ``name``,
    an extxyz file's name without its directory (checked, cheaply, for spec files)."""
    if is_file_dataset(key):
        from pathlib import Path

        from uqbench.datasets.spec import is_spec, read_spec

        if is_spec(key):
            return read_spec(key)["name"]
        if not Path(key).is_file():
            raise UQBenchError(f"no such data file {key!r}")
        return Path(key).stem
    return key


def load_dataset(key: str, **options: Any):
    """The dataset registered as ``key`` (or the extxyz file at path ``key``), built with
    ``options`` (e.g. ``train_size``)."""
    loader = dataset_loader(key)
    try:
        return loader(**options)
    except TypeError as exc:
        raise UQBenchError(f"dataset {key!r}: bad options: {exc}") from None
