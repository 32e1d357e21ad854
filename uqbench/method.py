"""`UQMethod`: the contract every UQ method meets (scikit-learn style). Imports no torch."""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from ase import Atoms

from uqbench.prediction import Prediction


class UQMethod(ABC):
    """A method that fits on labelled structures and predicts a distribution.

    The constructor takes explicit keyword hyperparameters and does no work; ``fit``
    returns ``self``; fitted attributes end in ``_``.
    """

    key: str = ""
    #: Hyperparameters that ``uqbench run --quick`` overrides (a smoke-test budget); set
    #: from the method's card (`uqbench.cards`), empty for a class used directly.
    quick_params: dict[str, Any] = {}
    #: Dataset options ``--quick`` applies where the loader takes them (the card's
    #: ``quick_data``).
    quick_data: dict[str, Any] = {}

    @abstractmethod
    def fit(self, train: list[Atoms], val: list[Atoms] | None = None) -> UQMethod: ...

    @abstractmethod
    def predict_distribution(
        self, structures: list[Atoms], n_samples: int | None = None
    ) -> Prediction: ...

    def check_prerequisites(self) -> None:
        """Raise `uqbench.errors.UQBenchError` when something this method needs is missing
        here (an optional package, a weights file); runs before any data is generated."""
        return None

    def save(self, path: str | Path) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot be saved")

    @classmethod
    def load(cls, path: str | Path) -> UQMethod:
        raise NotImplementedError(f"{cls.__name__} cannot be loaded")

    @property
    def n_parameters(self) -> int | None:
        return None

    def get_params(self) -> dict[str, Any]:
        """The hyperparameters (keywords of every ``__init__`` in the MRO) and their values."""
        names: dict[str, None] = {}
        for klass in type(self).__mro__:
            init = klass.__dict__.get("__init__")
            if init is None:
                continue
            for p in inspect.signature(init).parameters.values():
                if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                    names.setdefault(p.name)
        return {name: getattr(self, name) for name in names}

    #: name -> constraint (`uqbench.params`: Interval, Options, Optional, Mapping); merged
    #: over the class hierarchy and checked by `validate_params` before any work is done.
    parameter_constraints: dict[str, Any] = {}

    def validate_params(self) -> None:
        """Raise ValueError when a hyperparameter is outside its declared constraint."""
        from uqbench.params import validate

        validate(self)

    def set_params(self, **params: Any) -> UQMethod:
        valid = self.get_params()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"unknown hyperparameter {name!r}; valid: {', '.join(valid)}")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"
