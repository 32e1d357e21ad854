"""Hyperparameter constraints: each method declares the kind and range of its parameters,
and they are checked when a run is prepared — before any data is generated or any model
trained (the idea of scikit-learn's ``_parameter_constraints``). Imports no torch.

A method class lists ``parameter_constraints = {"name": constraint, ...}``; subclasses
add to their parents' (the tables of the whole MRO are merged). A constraint is an
`Interval`, an `Options`, or `Optional(constraint)` (None also allowed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

#: The most samples a prediction draws (``--n-samples``, ``n_samples``): samples are held
#: in memory, S x (structures + 3 x atoms) numbers per split.
MAX_SAMPLES = 1024

SEED_MAX = 2**32 - 1  # NumPy's and torch's seeds are unsigned 32-bit here


@dataclass(frozen=True)
class Interval:
    """A number of ``kind`` (``int`` or ``float``; an int is a float too) in [low, high],
    each bound open or closed; None for no bound."""

    kind: type
    low: float | None = None
    high: float | None = None
    closed: str = "both"  # "both", "left", "right" or "neither"

    def check(self, value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"must be {'an integer' if self.kind is int else 'a number'}"
        if self.kind is int and not isinstance(value, int):
            return "must be an integer"
        if not math.isfinite(value):
            return "must be finite"
        low_ok = self.low is None or (value >= self.low if self.closed in ("both", "left")
                                      else value > self.low)
        high_ok = self.high is None or (value <= self.high if self.closed in ("both", "right")
                                        else value < self.high)
        if not (low_ok and high_ok):
            return f"must be in {self.describe()}"
        return None

    def describe(self) -> str:
        left = "[" if self.closed in ("both", "left") else "("
        right = "]" if self.closed in ("both", "right") else ")"
        fmt = (lambda v: str(int(v))) if self.kind is int else (lambda v: f"{v:g}")
        low = "-inf" if self.low is None else fmt(self.low)
        high = "inf" if self.high is None else fmt(self.high)
        return f"{left}{low}, {high}{right}"


@dataclass(frozen=True)
class Options:
    """One of a fixed set of values."""

    values: tuple

    def check(self, value: Any) -> str | None:
        if value not in self.values:
            return "must be one of " + ", ".join(repr(v) for v in self.values)
        return None


@dataclass(frozen=True)
class Optional:
    """None, or a value meeting ``inner``."""

    inner: Interval | Options

    def check(self, value: Any) -> str | None:
        return None if value is None else self.inner.check(value)


@dataclass(frozen=True)
class Mapping:
    """None or a mapping (e.g. backbone options: checked by the backbone itself)."""

    def check(self, value: Any) -> str | None:
        return None if value is None or isinstance(value, dict) else "must be a mapping"


def constraints_of(klass: type) -> dict[str, Any]:
    """The merged ``parameter_constraints`` tables of ``klass`` and its bases."""
    merged: dict[str, Any] = {}
    for base in reversed(klass.__mro__):
        merged.update(base.__dict__.get("parameter_constraints", {}))
    return merged


def validate(method: Any) -> None:
    """Raise ValueError naming the first hyperparameter of ``method`` outside its
    constraint (parameters without a declared constraint are not checked)."""
    table = constraints_of(type(method))
    for name, value in method.get_params().items():
        constraint = table.get(name)
        if constraint is None:
            continue
        problem = constraint.check(value)
        if problem:
            raise ValueError(f"{name} {problem}; got {value!r}")


# -- setting hyperparameters: one home for parsing, merging and kind checks ------------------

#: Dict-valued hyperparameters whose entries nest as ``<prefix>__<key>`` (scikit-learn
#: style): set one entry and the others keep their values.
NESTED = {"backbone_options": "backbone"}


def parse_assignments(values: tuple[str, ...] | list[str], flag: str = "--param") -> dict:
    """``KEY=VALUE`` strings (values parsed as YAML) as a mapping; one-line errors."""
    import yaml

    from uqbench.errors import UQBenchError

    params: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UQBenchError(f"{flag} expects KEY=VALUE; got {item!r}")
        try:
            params[key] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            where = getattr(exc, "problem", None) or type(exc).__name__
            raise UQBenchError(f"{flag} {key}: not valid YAML ({where}): {raw!r}") from None
    return params


def flatten(params: dict[str, Any]) -> dict[str, Any]:
    """``backbone_options={hidden: 64}`` as ``backbone__hidden=64`` (other keys as given)."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if key in NESTED and isinstance(value, dict):
            out.update({f"{NESTED[key]}__{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def merge(*layers: dict[str, Any]) -> dict[str, Any]:
    """Later layers win key by key, nested options included: ``--quick``'s
    ``backbone__n_layers`` survives ``-p backbone__hidden=128`` (or ``-p
    'backbone_options={hidden: 128}'``)."""
    out: dict[str, Any] = {}
    for layer in layers:
        out.update(flatten(layer))
    return out


def check_kind(key: str, value: Any, default: Any) -> None:
    """A value set by a user must have its default's kind (a number where the default is a
    number, a whole number where it is an integer, ...); ValueError otherwise."""
    if default is None or value is None:
        return
    if isinstance(default, bool):
        ok, kind = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, kind = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif isinstance(default, float):
        ok, kind = isinstance(value, int | float) and not isinstance(value, bool), "a number"
    else:
        ok, kind = isinstance(value, type(default)), f"a {type(default).__name__}"
    if not ok:
        raise ValueError(f"{key} must be {kind}; got {value!r}")


def load_yaml_strict(text: str) -> Any:
    """YAML as data (safe types only), refusing a mapping that names a key twice: plain
    YAML keeps the last one silently, and a spec with ``train:`` twice would train on
    what the user meant as test. The error is a ``yaml.YAMLError`` with the line."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        pass

    def mapping(loader, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return loader.construct_mapping(node, deep)

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return yaml.load(text, Loader=StrictLoader)  # noqa: S506 (a SafeLoader subclass)
