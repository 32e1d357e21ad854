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


def test_method_cards_valid_and_the_one_home_of_defaults():
    """A built-in method is its card: create_method builds exactly the card's class with
    the card's hyperparameters, quick settings and quick data, all valid."""
    schema, cards = _cards("uqbench/method_cards")
    builtin = {k for k, e in entries("method").items() if e.target.startswith("uqbench.")}
    assert builtin == set(cards), f"methods and cards differ: {builtin ^ set(cards)}"
    for key, card in cards.items():
        jsonschema.validate(card, schema)
        assert card["key"] == key
        assert entries("method")[key].target == f"uqbench.cards:{key.replace('-', '_')}"
        method = uqbench.create_method(key)
        module, _, cls = card["implementation"].partition(":")
        assert f"{type(method).__module__}:{type(method).__qualname__}" == card[
            "implementation"], key
        assert card["hyperparameters"] == method.get_params(), key
        assert card["quick"] == method.quick_params, key
        assert card.get("quick_data", {}) == method.quick_data, key
        method.validate_params()
        method.set_params(**method.quick_params).validate_params()
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
    schema, cards = _cards("uqbench/method_cards")
    bad = dict(next(iter(cards.values())))
    del bad["hyperparameters"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_no_second_home_of_method_defaults():
    """The strategy classes carry no --quick settings, and the factory module is gone."""
    import importlib.util

    from uqbench.strategies import blip, deterministic, ensemble, mcdropout, perturbation

    for module in (blip, deterministic, ensemble, mcdropout, perturbation):
        for obj in vars(module).values():
            if isinstance(obj, type) and obj.__module__ == module.__name__:
                assert "quick_params" not in vars(obj), obj
    assert importlib.util.find_spec("uqbench.methods") is None


def test_a_plugin_card_makes_a_method(tmp_path):
    from uqbench.cards import card_factory, read_card

    card = read_card("egnn")
    card.update(key="my-egnn", name="My EGNN")
    card["hyperparameters"] = {**card["hyperparameters"], "lr": 0.01}
    path = tmp_path / "my-egnn.yaml"
    path.write_text(yaml.safe_dump(card))
    make = card_factory(path)
    assert make.summary == "My EGNN"
    method = make(backbone__hidden=16)
    assert method.lr == 0.01 and method.backbone_options == {"hidden": 16}
