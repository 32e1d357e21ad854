"""Cards are data: schema-valid, one per built-in, and in agreement with the code."""

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

import uqbench
from uqbench.registry import entries

ROOT = Path(__file__).resolve().parents[1]


def _cards(folder):
    schema = json.loads((ROOT / folder / "card.schema.json").read_text())
    return schema, {p.stem: yaml.safe_load(p.read_text()) for p in (ROOT / folder).glob("*.yaml")}


def test_method_cards_valid_and_match_code():
    schema, cards = _cards("methods")
    builtin = {k for k, e in entries("method").items() if e.target.startswith("uqbench.")}
    assert builtin <= set(cards), f"methods without a card: {builtin - set(cards)}"
    for key, card in cards.items():
        jsonschema.validate(card, schema)
        assert card["key"] == key
        method = uqbench.create_method(key)
        assert card["hyperparameters"] == method.get_params(), key
        assert card["quick"] == method.quick_params, key
        assert entries("method")[key].target == card["implementation"]
        if "backbone_defaults" in card:
            from uqbench.backbones.adapter import ADAPTERS, make_adapter

            assert card["backbone"] in ADAPTERS, key
            defaults = type(make_adapter(card["backbone"], {})).defaults()
            for name, value in card["backbone_defaults"].items():
                assert defaults[name] == value, (key, name)


def test_dataset_cards_valid_and_match_code():
    schema, cards = _cards("datasets")
    builtin = {k for k, e in entries("dataset").items() if e.target.startswith("uqbench.")}
    assert builtin <= set(cards)
    for key, card in cards.items():
        jsonschema.validate(card, schema)
        assert entries("dataset")[key].target == card["loader"]


def test_a_bad_card_fails_the_schema():
    schema, cards = _cards("methods")
    bad = dict(next(iter(cards.values())))
    del bad["hyperparameters"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
