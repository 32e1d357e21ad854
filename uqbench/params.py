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
