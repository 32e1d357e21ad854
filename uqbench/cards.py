"""Method cards: the one home of a built-in method's defaults.

A card (``uqbench/method_cards/<key>.yaml``, schema ``card.schema.json`` beside them) names
the strategy class that implements the method (``implementation``), its backbone, every
hyperparameter's default (``hyperparameters``), what ``--quick`` overrides (``quick``, and
``quick_data`` for the dataset), and says what the method is, where it comes from and what
it costs. `create_method` builds a method from its card and nothing else; the strategy
classes only hold generic defaults for direct use.

Built-in methods register as ``<key> = "uqbench.cards:<key with _ for ->"`` in the
``uqbench.methods`` entry-point group: the attribute is a factory made from the card. A
plugin ships a card the same way, with its own factory::

    # my_package/__init__.py
    from uqbench.cards import card_factory
    my_method = card_factory(Path(__file__).parent / "my-method.yaml")
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from uqbench.errors import UQBenchError

CARDS_DIR = Path(__file__).resolve().parent / "method_cards"


def read_card(source: str | Path) -> dict[str, Any]:
    """A card by key (a built-in) or by path, as a mapping; one-line errors."""
    path = Path(source)
    if not path.suffix:
        path = CARDS_DIR / f"{source}.yaml"
    try:
        card = yaml.safe_load(path.read_text())
    except OSError:
        raise UQBenchError(f"no method card {str(path)!r}") from None
    except yaml.YAMLError:
        raise UQBenchError(f"method card {path.name}: not valid YAML") from None
    if not isinstance(card, dict) or not {"key", "implementation", "hyperparameters"} <= set(
            card):
        raise UQBenchError(f"method card {path.name} needs key, implementation and "
                           "hyperparameters")
    return card


def method_from_card(card: dict[str, Any], **hyperparameters: Any):
    """An unfitted method: the card's class with the card's defaults, then
    ``hyperparameters`` (nested ``backbone__<option>`` merge)."""
    module, _, name = str(card["implementation"]).partition(":")
    try:
        klass = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise UQBenchError(f"method card {card['key']}: cannot import "
                           f"{card['implementation']} ({exc})") from None
    nested = {k: hyperparameters.pop(k) for k in list(hyperparameters) if "__" in k}
    method = klass(**{**(card["hyperparameters"] or {}), **hyperparameters})
    if nested:
        method.set_params(**nested)
    method.quick_params = dict(card.get("quick") or {})
    method.quick_data = dict(card.get("quick_data") or {})
    method.key = card["key"]
    return method


def card_factory(source: str | Path) -> Callable[..., Any]:
    """A method factory (what a ``uqbench.methods`` entry point names) from a card, read
    when called; its ``summary`` (what `uqbench methods` lists) is the card's name."""
    card = read_card(source)

    def create(**hyperparameters: Any):
        return method_from_card(read_card(source), **hyperparameters)

    create.__doc__ = card.get("summary") or card.get("name") or card["key"]
    create.summary = str(card.get("name") or card["key"])  # type: ignore[attr-defined]
    create.card = source  # type: ignore[attr-defined]
    return create


def __getattr__(name: str):
    """``uqbench.cards.p_egnn`` is the factory of the built-in card ``p-egnn``."""
    key = name.replace("_", "-")
    if (CARDS_DIR / f"{key}.yaml").is_file():
        return card_factory(key)
    raise AttributeError(f"module 'uqbench.cards' has no attribute {name!r}")
